export * from './direct-ort';
export * from './free-port';
export * from './redis-server';
export * from './service-process';
export * from './test-config';
export * from './test-redis';
export * from './python-venv';
