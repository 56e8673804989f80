import { Redis, type RedisOptions } from 'ioredis';

export type RedisRole =
  /** Blocking consumers (BullMQ Worker, QueueEvents): retry forever, never give up a command. */
  | 'consumer'
  /** Request-path clients in the API: fail fast so a request gets 503 instead of hanging. */
  | 'producer';

export interface RedisLogger {
  warn(obj: object, msg: string): void;
}

/**
 * The one place Redis clients are made. Every client gets an `error` listener (an unhandled
 * `error` event would crash the process) and options that fit its role.
 */
export function createRedis(url: string, role: RedisRole, options: { name: string; logger?: RedisLogger }): Redis {
  const common: RedisOptions = {
    connectionName: options.name,
    // Reconnect with capped backoff; Redis coming back must heal every client without a restart.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 2_000),
    connectTimeout: 2_000,
    lazyConnect: false,
  };
  const roleOptions: RedisOptions =
    role === 'consumer'
      ? { maxRetriesPerRequest: null, enableReadyCheck: true }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: false, enableAutoPipelining: true, commandTimeout: 2_000 };
  const client = new Redis(url, { ...common, ...roleOptions });
  let lastLogged = 0;
  client.on('error', (err: Error) => {
    // Reconnect loops emit an error per attempt: log at most one line every 5 s per client.
    const now = Date.now();
    if (now - lastLogged > 5_000) {
      lastLogged = now;
      options.logger?.warn({ redis: options.name, err: err.message }, 'redis connection error');
    }
  });
  return client;
}

/** Resolves when the client is connected and ready, or rejects after `timeoutMs`. */
export function waitForRedis(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
  });
}
