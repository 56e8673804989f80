import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** The models folder of this repository; containers set QUERN_MODELS_DIR instead. */
const REPO_MODELS_DIR = fileURLToPath(new URL('../../../models', import.meta.url));

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const list = z.string().transform((v) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
);

/**
 * Every setting, read from the environment, in pieces by who reads it. The keys are the variable
 * names, so a validation error names the variable to fix. Each process parses a schema of its
 * own built from these pieces (`configSchema(role)`): a worker is never handed token-signing
 * keys or rate limits, and the API never parses the worker's thread and lock settings.
 */
export type ConfigRole = 'api' | 'worker' | 'cli';

/** Environment and logging. */
const processSettings = {
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_FORMAT: z.enum(['auto', 'json', 'pretty']).default('auto'),
};

/** The address the HTTP server of the API (its routes) or of a worker (probes, metrics) binds. */
const listenSettings = {
  HOST: z.string().min(1).optional(),
};

/** Where Redis is and how keys are named: every process. */
const redisSettings = {
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
    .default('redis://127.0.0.1:6379'),
  REDIS_SENTINELS: list.default([]),
  REDIS_SENTINEL_MASTER: z.string().min(1).default('mymaster'),
  REDIS_CLUSTER_NODES: list.default([]),
  REDIS_USERNAME: z.string().min(1).optional(),
  REDIS_PASSWORD: z.string().min(1).optional(),
  REDIS_TLS: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  QUERN_REDIS_PREFIX: z
    .string()
    .max(32)
    .regex(
      /^[A-Za-z0-9_-]*(\{[A-Za-z0-9_-]+\})?[A-Za-z0-9_-]*$/,
      'letters, digits, _ and -, with at most one hash tag such as {quern}',
    )
    .min(1)
    .default('quern'),
};

/** Settings API and worker must agree on: secrets at rest, webhook policy, retention, models, heartbeats. */
const sharedSettings = {
  /**
   * Fair share of a tier's queue between keys: start-time fair queuing on BullMQ priorities (API),
   * and the keys of the jobs a worker prefetched taking turns (worker).
   */
  QUERN_FAIR_SHARE: z
    .enum(['true', 'false'])
    .default('true')
    .transform((v) => v === 'true'),
  /** Small sync jobs are also pushed to an idle worker over pub/sub, answered before BullMQ hands them over. */
  QUERN_SYNC_FAST_LANE: z
    .enum(['true', 'false'])
    .default('true')
    .transform((v) => v === 'true'),
  /** BullMQ queues per model (a manifest entry's `partitions` wins): jobs are spread over them by id. */
  QUERN_QUEUE_PARTITIONS: int(1, 64).default(1),
  QUERN_SECRETS_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  /** Hosts (or host:port) webhooks may reach even when they are private addresses. */
  QUERN_WEBHOOK_ALLOW_HOSTS: list.default([]),
  /** Delays before each retry; the default spans about a day. Jitter of ±20% is added. */
  QUERN_WEBHOOK_RETRY_SCHEDULE_MS: list
    .transform((items) => items.map(Number))
    .pipe(
      z
        .array(
          z
            .number()
            .int()
            .min(0)
            .max(7 * 24 * 3600 * 1000),
        )
        .max(50),
    )
    .default([5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000, 28_800_000]),
  QUERN_WEBHOOK_ROTATION_OVERLAP_SECONDS: int(0, 30 * 24 * 3600).default(24 * 3600),
  QUERN_RETAIN_COMPLETED_SECONDS: int(1, 365 * 24 * 3600).default(24 * 3600),
  QUERN_RETAIN_COMPLETED_COUNT: int(1, 10_000_000).default(10_000),
  QUERN_RETAIN_FAILED_SECONDS: int(1, 365 * 24 * 3600).default(7 * 24 * 3600),
  QUERN_CACHE_TTL_SECONDS: int(0, 30 * 24 * 3600).default(3600),
  QUERN_MODELS_DIR: z.string().min(1).default(REPO_MODELS_DIR),
  QUERN_HEARTBEAT_TTL_MS: int(300, 3_600_000).default(15_000),
  /** How long usage per key and hour is kept (workers write it, the API reads it). */
  QUERN_USAGE_RETENTION_DAYS: int(1, 400).default(35),
};

/** The API alone: HTTP, authentication, rate limits, what it writes into jobs, sync waits. */
const apiSettings = {
  PORT: int(0, 65_535).default(8000),
  QUERN_BODY_LIMIT_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
  QUERN_DEV_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  QUERN_KEY_CACHE_TTL_MS: int(0, 60_000).default(5_000),
  /** `kid:secret` pairs; the first signs, all verify (rotation overlap). Secrets of 32+ characters. */
  QUERN_JWT_KEYS: list.default([]),
  QUERN_JWT_ISSUER: z.string().min(1).default('quern'),
  QUERN_JWT_AUDIENCE: z.string().min(1).default('quern-api'),
  QUERN_JWT_TTL_SECONDS: int(60, 24 * 3600).default(900),
  QUERN_JWT_CLOCK_TOLERANCE_SECONDS: int(0, 300).default(5),
  QUERN_OIDC_JWKS_URL: z.url({ protocol: /^https?$/ }).optional(),
  QUERN_OIDC_ISSUER: z.string().min(1).optional(),
  QUERN_OIDC_AUDIENCE: z.string().min(1).optional(),
  QUERN_OIDC_ALGORITHMS: list.default(['RS256', 'ES256']),
  QUERN_OIDC_SCOPE_CLAIM: z.string().min(1).default('scope'),
  QUERN_OIDC_TIER_CLAIM: z.string().min(1).default('quern_tier'),
  QUERN_RATE_FREE_PER_MINUTE: int(0, 10_000_000).default(60),
  QUERN_RATE_FREE_PER_HOUR: int(0, 100_000_000).default(1_000),
  QUERN_RATE_PREMIUM_PER_MINUTE: int(0, 10_000_000).default(1_200),
  QUERN_RATE_PREMIUM_PER_HOUR: int(0, 100_000_000).default(50_000),
  QUERN_AUTH_FAILURES_PER_MINUTE: int(1, 100_000).default(20),
  /** Proxies in front of the API whose X-Forwarded-For entries are trusted (0: use the socket address). */
  QUERN_TRUST_PROXY_HOPS: int(0, 10).default(0),
  QUERN_CORS_ORIGINS: list.default([]),
  QUERN_JOB_TIMEOUT_DEFAULT_MS: int(1, 7 * 24 * 3600 * 1000).default(600_000),
  QUERN_JOB_TIMEOUT_MAX_MS: int(1, 7 * 24 * 3600 * 1000).default(24 * 3600 * 1000),
  QUERN_QUEUE_MAX_DEPTH: int(1, 100_000_000).default(100_000),
  /** Rows a key may have queued or running at once, by tier (0: no cap). */
  QUERN_CONCURRENCY_FREE_ROWS: int(0, 100_000_000).default(10_000),
  QUERN_CONCURRENCY_PREMIUM_ROWS: int(0, 100_000_000).default(100_000),
  /** Fair-share weight of a tier's keys that have none of their own (an admin sets a key's). */
  QUERN_FAIR_WEIGHT_FREE: z.coerce.number().min(0.01).max(1_000).default(1),
  QUERN_FAIR_WEIGHT_PREMIUM: z.coerce.number().min(0.01).max(1_000).default(1),
  /**
   * How the API writes input rows into jobs: `packed` (float32, base64; what this version's
   * workers and APIs read) or `json` (numbers; what versions before it read). Set `json` while
   * upgrading from such a version, then `packed` once every API and worker runs this one.
   */
  QUERN_JOB_INPUT_FORMAT: z.enum(['packed', 'json']).default('packed'),
  QUERN_QUEUE_DEPTH_CACHE_MS: int(0, 10_000).default(250),
  QUERN_PRIORITY_PREMIUM: int(1, 100).default(1),
  QUERN_PRIORITY_FREE: int(1, 100).default(5),
  QUERN_IDEMPOTENCY_TTL_SECONDS: int(60, 30 * 24 * 3600).default(24 * 3600),
  QUERN_SSE_KEEPALIVE_MS: int(100, 300_000).default(15_000),
  QUERN_CANCEL_WAIT_MS: int(0, 60_000).default(2_000),
  QUERN_SYNC_WAIT_DEFAULT_MS: int(0, 600_000).default(30_000),
  QUERN_SYNC_WAIT_MAX_MS: int(0, 600_000).default(60_000),
  QUERN_WAIT_POLL_INTERVAL_MS: int(50, 60_000).default(1_000),
  /** Jobs of one principal and model that sync calls may have running before new calls gather into one job (0: never coalesce). */
  QUERN_SYNC_COALESCE_IN_FLIGHT: int(0, 1_000).default(1),
  QUERN_SYNC_COALESCE_MAX_ROWS: int(1, 4_096).default(64),
  QUERN_JOB_ATTEMPTS: int(1, 100).default(3),
  QUERN_JOB_BACKOFF_MS: int(0, 3_600_000).default(1_000),
  QUERN_API_SHUTDOWN_GRACE_MS: int(0, 600_000).default(5_000),
};

/** The worker alone: consumers, inference threads, BullMQ locks, webhook delivery, shutdown. */
const workerSettings = {
  QUERN_WEBHOOK_TIMEOUT_MS: int(100, 60_000).default(10_000),
  QUERN_WEBHOOK_CONCURRENCY: int(1, 1000).default(32),
  /** Deliveries of one principal at once per worker process; the rest wait, so one slow receiver cannot fill every slot. */
  QUERN_WEBHOOK_PER_OWNER_CONCURRENCY: int(1, 1000).default(8),
  /** Consecutive timeouts, connection failures, 5xx or 429 of one receiver origin that open its circuit (0: never). */
  QUERN_WEBHOOK_BREAKER_FAILURES: int(0, 1000).default(5),
  /** How long an open circuit holds that origin's deliveries back; doubles with each failed probe, up to 16×. */
  QUERN_WEBHOOK_BREAKER_OPEN_MS: int(100, 3_600_000).default(30_000),
  QUERN_WORKER_MODELS: list.default([]),
  QUERN_WORKER_THREADS: int(1, 256).default(availableParallelism()),
  QUERN_WORKER_PREFETCH: int(0, 100_000).default(0),
  /** Model memory a worker may hold (estimate: each loaded version's file × sessions); 0: no budget. */
  QUERN_WORKER_MODEL_MEMORY_MB: int(0, 1_048_576).default(0),
  /** Batches of at most this many rows run on the worker's main thread (0: always a thread). */
  QUERN_WORKER_INLINE_MAX_ROWS: int(0, 1_024).default(8),
  /** ...for models whose batch of that size runs within this many milliseconds. */
  QUERN_WORKER_INLINE_MAX_MS: z.coerce.number().min(0).max(50).default(1),
  QUERN_WORKER_PORT: int(0, 65_535).default(9100),
  QUERN_LOCK_DURATION_MS: int(1_000, 3_600_000).default(30_000),
  QUERN_STALLED_INTERVAL_MS: int(1_000, 3_600_000).default(30_000),
  QUERN_MAX_STALLED_COUNT: int(0, 1000).default(2),
  QUERN_SHUTDOWN_TIMEOUT_MS: int(0, 3_600_000).default(30_000),
  QUERN_HEARTBEAT_INTERVAL_MS: int(100, 600_000).default(5_000),
};

const SCHEMA_PIECES = {
  api: { ...processSettings, ...listenSettings, ...redisSettings, ...sharedSettings, ...apiSettings },
  worker: { ...processSettings, ...listenSettings, ...redisSettings, ...sharedSettings, ...workerSettings },
  cli: { ...processSettings, ...redisSettings, ...sharedSettings },
  /** API and worker in one process: the tests and the documentation. */
  all: {
    ...processSettings,
    ...listenSettings,
    ...redisSettings,
    ...sharedSettings,
    ...apiSettings,
    ...workerSettings,
  },
} as const;

/** The variable names each role reads (docs/configuration.md's "read by" column comes from here). */
export const CONFIG_VARIABLES: Record<ConfigRole, readonly string[]> = {
  api: Object.keys(SCHEMA_PIECES.api),
  worker: Object.keys(SCHEMA_PIECES.worker),
  cli: Object.keys(SCHEMA_PIECES.cli),
};

type Issue = { path: string; message: string };
/** Parsed settings as a check sees them: only the variables of the schema it runs in are there. */
type Settings = Partial<z.output<z.ZodObject<typeof SCHEMA_PIECES.all>>>;
type Check = (c: Settings) => Issue | undefined;

/**
 * Cross-field checks. Each runs only where every variable it names is in the schema, so the
 * API's checks never fail a worker.
 */
const CHECKS: Array<{ needs: (keyof Settings)[]; check: Check }> = [
  {
    needs: ['REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'],
    check: (c) =>
      (c.REDIS_CLUSTER_NODES ?? []).length > 0 && (c.REDIS_SENTINELS ?? []).length > 0
        ? { path: 'REDIS_SENTINELS', message: 'cannot be used with REDIS_CLUSTER_NODES' }
        : undefined,
  },
  {
    needs: ['QUERN_SYNC_WAIT_DEFAULT_MS', 'QUERN_SYNC_WAIT_MAX_MS'],
    check: (c) =>
      (c.QUERN_SYNC_WAIT_DEFAULT_MS ?? 0) > (c.QUERN_SYNC_WAIT_MAX_MS ?? 0)
        ? {
            path: 'QUERN_SYNC_WAIT_DEFAULT_MS',
            message: `must not exceed QUERN_SYNC_WAIT_MAX_MS (${c.QUERN_SYNC_WAIT_MAX_MS})`,
          }
        : undefined,
  },
  {
    needs: ['QUERN_HEARTBEAT_TTL_MS', 'QUERN_HEARTBEAT_INTERVAL_MS'],
    check: (c) =>
      (c.QUERN_HEARTBEAT_TTL_MS ?? 0) <= (c.QUERN_HEARTBEAT_INTERVAL_MS ?? 0)
        ? { path: 'QUERN_HEARTBEAT_TTL_MS', message: 'must be longer than QUERN_HEARTBEAT_INTERVAL_MS' }
        : undefined,
  },
  {
    needs: ['QUERN_JWT_KEYS'],
    check: (c) => {
      for (const [i, entry] of (c.QUERN_JWT_KEYS ?? []).entries()) {
        const colon = entry.indexOf(':');
        if (colon < 1 || entry.length - colon - 1 < 32) {
          return {
            path: 'QUERN_JWT_KEYS',
            message: `entry ${i + 1} must be kid:secret with a secret of at least 32 characters`,
          };
        }
      }
      return undefined;
    },
  },
  {
    needs: ['QUERN_JWT_KEYS'],
    check: (c) =>
      c.NODE_ENV === 'production' && (c.QUERN_JWT_KEYS ?? []).length === 0
        ? {
            path: 'QUERN_JWT_KEYS',
            message: 'is required when NODE_ENV=production (kid:secret, secret of 32+ random characters)',
          }
        : undefined,
  },
  {
    needs: ['QUERN_OIDC_JWKS_URL'],
    check: (c) =>
      c.QUERN_OIDC_JWKS_URL && (!c.QUERN_OIDC_ISSUER || !c.QUERN_OIDC_AUDIENCE)
        ? {
            path: 'QUERN_OIDC_ISSUER',
            message: 'QUERN_OIDC_ISSUER and QUERN_OIDC_AUDIENCE are required with QUERN_OIDC_JWKS_URL',
          }
        : undefined,
  },
  {
    needs: ['QUERN_SECRETS_KEY'],
    check: (c) =>
      c.NODE_ENV === 'production' && c.QUERN_SECRETS_KEY === undefined
        ? {
            path: 'QUERN_SECRETS_KEY',
            message: 'is required when NODE_ENV=production (32+ random characters; encrypts webhook secrets at rest)',
          }
        : undefined,
  },
  {
    needs: ['QUERN_JOB_TIMEOUT_DEFAULT_MS', 'QUERN_JOB_TIMEOUT_MAX_MS'],
    check: (c) =>
      (c.QUERN_JOB_TIMEOUT_DEFAULT_MS ?? 0) > (c.QUERN_JOB_TIMEOUT_MAX_MS ?? 0)
        ? { path: 'QUERN_JOB_TIMEOUT_DEFAULT_MS', message: 'must not exceed QUERN_JOB_TIMEOUT_MAX_MS' }
        : undefined,
  },
  {
    needs: ['QUERN_PRIORITY_PREMIUM', 'QUERN_PRIORITY_FREE'],
    check: (c) =>
      (c.QUERN_PRIORITY_PREMIUM ?? 0) > (c.QUERN_PRIORITY_FREE ?? 0)
        ? {
            path: 'QUERN_PRIORITY_PREMIUM',
            message: 'must not be a lower priority (a larger number) than QUERN_PRIORITY_FREE',
          }
        : undefined,
  },
  {
    needs: ['QUERN_CORS_ORIGINS'],
    check: (c) =>
      c.NODE_ENV === 'production' && (c.QUERN_CORS_ORIGINS ?? []).includes('*')
        ? { path: 'QUERN_CORS_ORIGINS', message: 'must list origins in production, not *' }
        : undefined,
  },
  {
    needs: ['QUERN_DEV_API_KEY'],
    check: (c) =>
      c.NODE_ENV === 'production' && c.QUERN_DEV_API_KEY !== undefined
        ? { path: 'QUERN_DEV_API_KEY', message: 'is refused when NODE_ENV=production; create a real key instead' }
        : undefined,
  },
];

/** A schema that reads HOST always yields one (the default depends on NODE_ENV). */
type WithHost<T> = 'HOST' extends keyof T ? Omit<T, 'HOST'> & { HOST: string } : T;

function buildSchema<const S extends z.ZodRawShape>(shape: S) {
  const checks = CHECKS.filter(({ needs }) => needs.every((name) => name in shape));
  return z
    .object(shape)
    .superRefine((c, ctx) => {
      for (const { check } of checks) {
        const issue = check(c);
        if (issue) ctx.addIssue({ code: 'custom', path: [issue.path], message: issue.message });
      }
    })
    .transform((c) => {
      if (!('HOST' in shape)) return c as WithHost<typeof c>;
      const settings: Settings = c;
      // Bind to loopback unless told otherwise, except in production (containers).
      const host = settings.HOST ?? (settings.NODE_ENV === 'production' ? '0.0.0.0' : '127.0.0.1');
      return { ...c, HOST: host } as WithHost<typeof c>;
    });
}

const SCHEMAS = {
  api: buildSchema(SCHEMA_PIECES.api),
  worker: buildSchema(SCHEMA_PIECES.worker),
  cli: buildSchema(SCHEMA_PIECES.cli),
  all: buildSchema(SCHEMA_PIECES.all),
};

/** The schema `role` parses: see `ConfigRole`; `all` is API and worker in one process (tests). */
export function configSchema<R extends keyof typeof SCHEMAS>(role: R): (typeof SCHEMAS)[R] {
  return SCHEMAS[role];
}

/** The settings of the API process. */
export type ApiConfig = z.output<(typeof SCHEMAS)['api']>;
/** The settings of a worker process. */
export type WorkerConfig = z.output<(typeof SCHEMAS)['worker']>;
/** What every process reads: Redis and the settings API and worker share. The key CLI reads only these. */
export type CommonConfig = z.output<(typeof SCHEMAS)['cli']>;
export type CliConfig = CommonConfig;
/** Every setting: API and worker in one process (the tests), and the reference docs. */
export type Config = z.output<(typeof SCHEMAS)['all']>;
/** How to reach Redis and name its keys: what `createRedis` and `KeySpace` need. */
export type RedisConfig = Pick<CliConfig, keyof typeof redisSettings>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Parses the configuration once, at start-up. Empty strings count as unset, so
 * `FOO=` in a compose file falls back to the default instead of failing.
 */
export function loadConfig(source?: Record<string, string | undefined>): ApiConfig;
export function loadConfig<R extends keyof typeof SCHEMAS>(
  source: Record<string, string | undefined>,
  role: R,
): z.output<(typeof SCHEMAS)[R]>;
export function loadConfig(
  source: Record<string, string | undefined> = process.env,
  role: keyof typeof SCHEMAS = 'api',
): z.output<(typeof SCHEMAS)[keyof typeof SCHEMAS]> {
  const cleaned: Record<string, string> = {};
  for (const [key, value] of Object.entries(source)) {
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  const parsed = configSchema(role).safeParse(cleaned);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const name = issue.path.join('.') || '(config)';
        const got = typeof issue.path[0] === 'string' ? cleaned[issue.path[0]] : undefined;
        // Values of secrets are never echoed.
        const shown = got === undefined || /KEY|SECRET|TOKEN|PASSWORD|URL/.test(name) ? '' : ` (got "${got}")`;
        return `${name}: ${issue.message}${shown}`;
      }),
    );
  }
  return parsed.data;
}
