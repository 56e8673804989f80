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
 * Every setting of API and worker, read from the environment. The keys are the variable
 * names, so a validation error names the variable to fix.
 */
export const ConfigSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),

    // Redis
    REDIS_URL: z
      .string()
      .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
      .default('redis://127.0.0.1:6379'),
    QUERN_REDIS_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9{}_-]{1,32}$/, 'letters, digits, _ - { } only (use {quern} for Redis Cluster)')
      .default('quern'),

    // HTTP (API)
    HOST: z.string().min(1).optional(),
    PORT: int(0, 65_535).default(8000),
    QUERN_BODY_LIMIT_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),

    // Authentication (env-configured keys; the key store replaces them)
    QUERN_API_KEYS: list.default([]),
    QUERN_DEV_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),

    // Models
    QUERN_MODELS_DIR: z.string().min(1).default(REPO_MODELS_DIR),

    // Sync waits (/v1/predict)
    QUERN_SYNC_WAIT_DEFAULT_MS: int(0, 600_000).default(30_000),
    QUERN_SYNC_WAIT_MAX_MS: int(0, 600_000).default(60_000),
    QUERN_WAIT_POLL_INTERVAL_MS: int(50, 60_000).default(1_000),

    // Result cache
    QUERN_CACHE_TTL_SECONDS: int(0, 30 * 24 * 3600).default(3600),

    // Jobs
    QUERN_JOB_ATTEMPTS: int(1, 100).default(3),
    QUERN_JOB_BACKOFF_MS: int(0, 3_600_000).default(1_000),
    QUERN_RETAIN_COMPLETED_SECONDS: int(1, 365 * 24 * 3600).default(24 * 3600),
    QUERN_RETAIN_COMPLETED_COUNT: int(1, 10_000_000).default(10_000),
    QUERN_RETAIN_FAILED_SECONDS: int(1, 365 * 24 * 3600).default(7 * 24 * 3600),

    // Worker
    QUERN_WORKER_MODELS: list.default([]),
    QUERN_WORKER_THREADS: int(1, 256).default(availableParallelism()),
    QUERN_WORKER_PREFETCH: int(0, 100_000).default(0),
    QUERN_WORKER_PORT: int(0, 65_535).default(9100),
    QUERN_LOCK_DURATION_MS: int(1_000, 3_600_000).default(30_000),
    QUERN_STALLED_INTERVAL_MS: int(1_000, 3_600_000).default(30_000),
    QUERN_MAX_STALLED_COUNT: int(0, 1000).default(2),
    QUERN_SHUTDOWN_TIMEOUT_MS: int(0, 3_600_000).default(30_000),
    QUERN_HEARTBEAT_INTERVAL_MS: int(100, 600_000).default(5_000),
    QUERN_HEARTBEAT_TTL_MS: int(300, 3_600_000).default(15_000),
  })
  .superRefine((c, ctx) => {
    if (c.QUERN_SYNC_WAIT_DEFAULT_MS > c.QUERN_SYNC_WAIT_MAX_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['QUERN_SYNC_WAIT_DEFAULT_MS'],
        message: `must not exceed QUERN_SYNC_WAIT_MAX_MS (${c.QUERN_SYNC_WAIT_MAX_MS})`,
      });
    }
    if (c.QUERN_HEARTBEAT_TTL_MS <= c.QUERN_HEARTBEAT_INTERVAL_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['QUERN_HEARTBEAT_TTL_MS'],
        message: 'must be longer than QUERN_HEARTBEAT_INTERVAL_MS',
      });
    }
    if (c.NODE_ENV === 'production' && c.QUERN_DEV_API_KEY !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['QUERN_DEV_API_KEY'],
        message: 'is refused when NODE_ENV=production; create a real key instead',
      });
    }
  })
  .transform((c) => ({
    ...c,
    // Bind to loopback unless told otherwise, except in production (containers).
    HOST: c.HOST ?? (c.NODE_ENV === 'production' ? '0.0.0.0' : '127.0.0.1'),
  }));

export type Config = z.output<typeof ConfigSchema>;

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
export function loadConfig(source: Record<string, string | undefined> = process.env): Config {
  const cleaned: Record<string, string> = {};
  for (const [key, value] of Object.entries(source)) {
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  const parsed = ConfigSchema.safeParse(cleaned);
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
