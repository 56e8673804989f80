import calculateSlot from 'cluster-key-slot';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';

/** A standalone, Sentinel-managed or Cluster client: every command Quern uses exists on both. */
export type RedisClient = Redis | Cluster;

export type RedisRole =
  /** Blocking consumers (BullMQ Worker, QueueEvents): retry forever, never give up a command. */
  | 'consumer'
  /** Request-path clients in the API: fail fast so a request gets 503 instead of hanging. */
  | 'producer';

export interface RedisLogger {
  warn(obj: object, msg: string): void;
}

/** Where Redis is: a URL, a Sentinel group, or Cluster seed nodes (the config's Redis fields). */
export interface RedisTopology {
  REDIS_URL: string;
  REDIS_SENTINELS: string[];
  REDIS_SENTINEL_MASTER: string;
  REDIS_CLUSTER_NODES: string[];
  REDIS_USERNAME?: string | undefined;
  REDIS_PASSWORD?: string | undefined;
  REDIS_TLS: boolean;
}

function hostPort(entry: string): { host: string; port: number } {
  const at = entry.lastIndexOf(':');
  return at > 0 ? { host: entry.slice(0, at), port: Number(entry.slice(at + 1)) } : { host: entry, port: 6379 };
}

/**
 * The one place Redis clients are made. Every client gets an `error` listener (an unhandled
 * `error` event would crash the process) and options that fit its role. `REDIS_CLUSTER_NODES`
 * gives a Cluster client, `REDIS_SENTINELS` a Sentinel-managed one, else `REDIS_URL`.
 */
export function createRedis(
  topology: RedisTopology | string,
  role: RedisRole,
  options: {
    name: string;
    logger?: RedisLogger;
    /**
     * Batch the commands of one tick into one write (producers). Off for connections BullMQ
     * defines its ~60 Lua scripts on: ioredis copies every script into each pipeline it makes.
     */
    autoPipelining?: boolean;
  },
): RedisClient {
  const t: RedisTopology =
    typeof topology === 'string'
      ? {
          REDIS_URL: topology,
          REDIS_SENTINELS: [],
          REDIS_SENTINEL_MASTER: 'mymaster',
          REDIS_CLUSTER_NODES: [],
          REDIS_TLS: false,
        }
      : topology;
  const common: RedisOptions = {
    connectionName: options.name,
    // Reconnect with capped backoff; Redis coming back must heal every client without a restart.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 2_000),
    connectTimeout: 2_000,
    ...(t.REDIS_USERNAME ? { username: t.REDIS_USERNAME } : {}),
    ...(t.REDIS_PASSWORD ? { password: t.REDIS_PASSWORD } : {}),
    ...(t.REDIS_TLS ? { tls: {} } : {}),
  };
  const roleOptions: RedisOptions =
    role === 'consumer'
      ? { maxRetriesPerRequest: null, enableReadyCheck: true }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: false, commandTimeout: 2_000 };
  roleOptions.enableAutoPipelining = options.autoPipelining ?? role === 'producer';

  let client: RedisClient;
  if (t.REDIS_CLUSTER_NODES.length > 0) {
    const clusterOptions: ClusterOptions = {
      redisOptions: (({ retryStrategy: _r, enableOfflineQueue: _o, ...rest }) => rest)({ ...common, ...roleOptions }),
      clusterRetryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 2_000),
      enableOfflineQueue: role === 'consumer',
      enableAutoPipelining: roleOptions.enableAutoPipelining,
      enableReadyCheck: true,
      // Cluster nodes announce their own addresses; keep the seed host names for TLS and NAT.
      ...(t.REDIS_TLS ? { dnsLookup: (address, callback) => callback(null, address) } : {}),
    };
    client = new Cluster(t.REDIS_CLUSTER_NODES.map(hostPort), clusterOptions);
  } else if (t.REDIS_SENTINELS.length > 0) {
    client = new Redis({
      ...common,
      ...roleOptions,
      sentinels: t.REDIS_SENTINELS.map(hostPort),
      name: t.REDIS_SENTINEL_MASTER,
      // Subscribe to the Sentinels' +switch-master: on a planned failover the old master stays up
      // (as a replica), and without this a client stays connected to it, its writes refused.
      failoverDetector: true,
      ...(t.REDIS_PASSWORD ? { sentinelPassword: t.REDIS_PASSWORD } : {}),
    });
  } else {
    client = new Redis(t.REDIS_URL, { ...common, ...roleOptions });
  }
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
export function waitForRedis(client: RedisClient, timeoutMs: number): Promise<void> {
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

/** One command of a batch: a Redis command's (or a defined script's) name, its first key, its other arguments. */
export type BatchCommand = [name: string, key: string, ...args: (string | number | Buffer)[]];

/**
 * Sends a batch in as few round trips as the topology allows: one pipeline on a single Redis; on
 * a Cluster one pipeline per shard (ioredis refuses a pipeline whose keys more than one shard
 * serves, and the spread key layout puts a batch's keys on every shard). Replies come back in the
 * commands' order, as `exec` gives them. A command's other keys must share its first key's slot.
 */
export async function execBatch(
  redis: RedisClient,
  commands: readonly BatchCommand[],
): Promise<[Error | null, unknown][]> {
  if (commands.length === 0) return [];
  if (!(redis instanceof Cluster))
    return ((await redis.pipeline(commands as unknown as string[][]).exec()) ?? []) as [Error | null, unknown][];
  const groups = new Map<string, number[]>();
  for (let i = 0; i < commands.length; i++) {
    const slot = calculateSlot((commands[i] as BatchCommand)[1]);
    // The nodes serving the slot (master first), as ioredis groups a pipeline; the slot itself before the map is known.
    const group = redis.slots[slot]?.join(',') || `slot:${slot}`;
    const list = groups.get(group);
    if (list) list.push(i);
    else groups.set(group, [i]);
  }
  const out: [Error | null, unknown][] = new Array(commands.length);
  await Promise.all(
    [...groups.values()].map(async (indexes) => {
      const replies =
        (await redis
          .pipeline(indexes.map((i) => commands[i]) as unknown as string[][])
          .exec()
          .catch((err: Error) => indexes.map(() => [err, null] as [Error, null]))) ?? [];
      indexes.forEach((i, k) => {
        out[i] = (replies[k] ?? [new Error('no reply'), null]) as [Error | null, unknown];
      });
    }),
  );
  // A slot that moved (a failover, a reshard) fails only its own commands of a pipeline: each is
  // sent again on its own, which ioredis redirects (and its slot map is refreshed by).
  await Promise.all(
    out.map(async (reply, i) => {
      if (!reply[0] || !/^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /.test(reply[0].message)) return;
      const [name, ...args] = commands[i] as BatchCommand;
      const method = (redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name];
      try {
        out[i] = [null, await (typeof method === 'function' ? method.apply(redis, args) : redis.call(name, ...args))];
      } catch (err) {
        out[i] = [err as Error, null];
      }
    }),
  );
  return out;
}

/** GET of many keys: one MGET on a single Redis; on a Cluster a GET per key, batched per shard. */
export async function getMany(redis: RedisClient, keys: readonly string[]): Promise<(string | null)[]> {
  if (keys.length === 0) return [];
  if (!(redis instanceof Cluster)) return redis.mget(...keys);
  const replies = await execBatch(
    redis,
    keys.map((key) => ['get', key]),
  );
  return replies.map(([err, value]) => {
    if (err) throw err;
    return value as string | null;
  });
}
