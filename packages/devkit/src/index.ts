export * from './direct-ort';
export * from './free-port';
export * from './python-venv';
export * from './redis-cluster';
export * from './redis-server';
export * from './service-process';
export * from './test-config';
export * from './test-redis';
