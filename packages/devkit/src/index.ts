export * from './free-port';
export * from './redis-server';
export * from './service-process';
