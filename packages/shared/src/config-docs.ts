/**
 * What each configuration variable is for, beside the schema in `config.ts` (which says its type,
 * range and default). `pnpm docs:generate` renders both into docs/configuration.md, and
 * `config-docs.test.ts` fails when a schema key has no entry here or an entry names no key: add a
 * variable to the schema, describe it here.
 */

/** The sections of docs/configuration.md, in the order they appear. */
export const CONFIG_GROUPS = {
  process: { title: 'Process', intro: 'Environment and logging.' },
  redis: {
    title: 'Redis',
    intro:
      'Where queues, results, the result cache, keys, limits and heartbeats live. The key CLI ' +
      '(`pnpm quern keys …`) reads these too.',
  },
  http: { title: 'HTTP', intro: 'How the API listens and what it accepts.' },
  auth: {
    title: 'Authentication',
    intro: 'API keys, access tokens signed by the API, and tokens of an external identity provider.',
  },
  limits: {
    title: 'Rate limits',
    intro: 'Budgets per principal and tier, counted in Redis (`0`: no limit on that budget).',
  },
  webhooks: {
    title: 'Webhooks',
    intro: 'Deliveries of job events, signed per Standard Webhooks and sent by the workers.',
  },
  jobs: { title: 'Jobs', intro: 'What the API writes into each job, and how long jobs and their records are kept.' },
  sync: {
    title: 'Sync waits',
    intro: '`/v1/predict` and `/v1/batch-predict`: how long callers wait, and how calls share jobs.',
  },
  cache: { title: 'Result cache', intro: 'Results by model, version and input row.' },
  models: { title: 'Models', intro: 'Where the model manifest and the `.onnx` files are.' },
  worker: { title: 'Worker', intro: 'Consumers, inference threads and BullMQ lock handling.' },
  lifecycle: { title: 'Shutdown and health', intro: 'SIGTERM handling, heartbeats and readiness.' },
} as const;

export type ConfigGroup = keyof typeof CONFIG_GROUPS;

export interface VariableDoc {
  description: string;
  group: ConfigGroup;
  /** Replaces the default parsed from the schema, where that one depends on the machine. */
  defaultText?: string;
  /** Said after the default parsed from the schema. */
  defaultNote?: string;
}

/** Every variable of the schemas in `config.ts`, by name. */
export const CONFIG_DOCS: Record<string, VariableDoc> = {
  NODE_ENV: {
    group: 'process',
    description:
      '`production` binds `0.0.0.0`, refuses `QUERN_DEV_API_KEY`, requires `QUERN_SECRETS_KEY` (and, in the API, ' +
      '`QUERN_JWT_KEYS`, and origins rather than `*` in `QUERN_CORS_ORIGINS`) and allows only `https` webhook URLs.',
  },
  LOG_LEVEL: { group: 'process', description: 'pino level.' },
  LOG_FORMAT: {
    group: 'process',
    description:
      '`json`: one JSON object a line (for log pipelines); `pretty`: one coloured, readable line each; `auto`: ' +
      'pretty when standard output is a terminal, else JSON. `pnpm start` formats its API and worker the same way.',
  },

  REDIS_URL: { group: 'redis', description: 'Redis (the embedded launcher of `pnpm start` sets it).' },
  REDIS_SENTINELS: {
    group: 'redis',
    description: 'Sentinel `host:port` list (instead of `REDIS_URL`); not together with `REDIS_CLUSTER_NODES`.',
  },
  REDIS_SENTINEL_MASTER: { group: 'redis', description: 'Sentinel master name.' },
  REDIS_CLUSTER_NODES: {
    group: 'redis',
    description:
      'Redis Cluster seed `host:port` list. With an untagged `QUERN_REDIS_PREFIX` keys are spread over the ' +
      'shards (each queue in a slot of its own); with a tagged one (`{quern}`) every key shares one slot.',
  },
  REDIS_USERNAME: {
    group: 'redis',
    description: 'Redis ACL user name (for `REDIS_URL`, Sentinel and Cluster).',
  },
  REDIS_PASSWORD: {
    group: 'redis',
    description: 'Redis ACL password (for `REDIS_URL`, Sentinel and Cluster; the password is also Sentinel’s).',
  },
  REDIS_TLS: { group: 'redis', description: 'TLS to Redis (for `REDIS_URL`, Sentinel and Cluster).' },
  QUERN_REDIS_PREFIX: {
    group: 'redis',
    description:
      'Prefix of every key. On a Redis Cluster an untagged prefix spreads the keys over the shards; a hash ' +
      'tag (`{quern}`) keeps every key in one slot, the layout before partitions (see docs/operations.md on ' +
      'moving from it).',
  },

  HOST: {
    group: 'http',
    description: 'Listen address of the API, and of the worker’s metrics port.',
    defaultText: '`127.0.0.1` (`0.0.0.0` when `NODE_ENV=production`)',
  },
  PORT: { group: 'http', description: 'API port.' },
  QUERN_BODY_LIMIT_BYTES: { group: 'http', description: 'Largest request body (`413` above it).' },
  QUERN_TRUST_PROXY_HOPS: {
    group: 'http',
    description: 'Trusted proxies in front (client address from `X-Forwarded-For`; `0`: the socket address).',
  },
  QUERN_CORS_ORIGINS: {
    group: 'http',
    description: 'Allowed browser origins (CORS is off when empty; `*` is refused in production).',
  },

  QUERN_DEV_API_KEY: {
    group: 'auth',
    description:
      'Development key, stored (or refreshed) at start-up as a premium key with every scope; refused in ' +
      'production. `pnpm start` generates one and keeps it in `.data/dev-api-key`.',
  },
  QUERN_KEY_CACHE_TTL_MS: {
    group: 'auth',
    description:
      'How long an API process trusts a key record it read: a revoked key, and every token issued for it, ' +
      'stops working on every API process within that time.',
  },
  QUERN_JWT_KEYS: {
    group: 'auth',
    description:
      '`kid:secret` list (secrets of 32+ characters); the first signs, every one verifies. Required in production; ' +
      'in development an ephemeral key is used when it is unset. Workers do not need it.',
    defaultNote: '(required in production)',
  },
  QUERN_JWT_ISSUER: { group: 'auth', description: 'Token `iss`.' },
  QUERN_JWT_AUDIENCE: { group: 'auth', description: 'Token `aud`.' },
  QUERN_JWT_TTL_SECONDS: { group: 'auth', description: 'Token lifetime.' },
  QUERN_JWT_CLOCK_TOLERANCE_SECONDS: { group: 'auth', description: 'Allowed clock skew.' },
  QUERN_OIDC_JWKS_URL: {
    group: 'auth',
    description:
      'External identity provider: its JWKS. Its tokens are accepted when this, `QUERN_OIDC_ISSUER` and ' +
      '`QUERN_OIDC_AUDIENCE` are set.',
  },
  QUERN_OIDC_ISSUER: { group: 'auth', description: 'External identity provider: its issuer.' },
  QUERN_OIDC_AUDIENCE: {
    group: 'auth',
    description: 'External identity provider: the audience its tokens must name.',
  },
  QUERN_OIDC_ALGORITHMS: {
    group: 'auth',
    description: 'How its tokens are read: the signature algorithms accepted.',
  },
  QUERN_OIDC_SCOPE_CLAIM: {
    group: 'auth',
    description: 'How its tokens are read: the claim that gives the scopes.',
  },
  QUERN_OIDC_TIER_CLAIM: {
    group: 'auth',
    description: 'How its tokens are read: the claim that gives the tier.',
  },

  QUERN_RATE_FREE_PER_MINUTE: {
    group: 'limits',
    description: 'Free tier budget per minute (`0`: none).',
  },
  QUERN_RATE_FREE_PER_HOUR: { group: 'limits', description: 'Free tier budget per hour (`0`: none).' },
  QUERN_RATE_PREMIUM_PER_MINUTE: {
    group: 'limits',
    description: 'Premium tier budget per minute (`0`: none).',
  },
  QUERN_RATE_PREMIUM_PER_HOUR: {
    group: 'limits',
    description: 'Premium tier budget per hour (`0`: none).',
  },
  QUERN_AUTH_FAILURES_PER_MINUTE: {
    group: 'limits',
    description: 'Failed authentications per client address and minute.',
  },

  QUERN_SECRETS_KEY: {
    group: 'webhooks',
    description:
      'Key that seals webhook signing secrets at rest (32+ characters). Required in production; in development ' +
      'a built-in development key is used, with a warning.',
    defaultNote: '(required in production)',
  },
  QUERN_WEBHOOK_ALLOW_HOSTS: {
    group: 'webhooks',
    description:
      'Webhook receivers allowed on private addresses (`host` or `host:port`); the API checks at submit time, ' +
      'the worker as it connects.',
  },
  QUERN_WEBHOOK_TIMEOUT_MS: { group: 'webhooks', description: 'One delivery attempt.' },
  QUERN_WEBHOOK_CONCURRENCY: { group: 'webhooks', description: 'Deliveries at once per worker.' },
  QUERN_WEBHOOK_PER_OWNER_CONCURRENCY: {
    group: 'webhooks',
    description:
      'Deliveries of one principal at once per worker; the rest wait without spending an attempt, so one slow ' +
      'receiver cannot fill every slot.',
  },
  QUERN_WEBHOOK_BREAKER_FAILURES: {
    group: 'webhooks',
    description:
      'Consecutive failures (timeout, connection failure, 5xx or 429) of a receiver origin that open its circuit ' +
      '(`0`: never).',
  },
  QUERN_WEBHOOK_BREAKER_OPEN_MS: {
    group: 'webhooks',
    description:
      'How long an open circuit holds back that origin’s deliveries before a probe (doubles per failed probe, up to 16×).',
  },
  QUERN_WEBHOOK_RETRY_SCHEDULE_MS: {
    group: 'webhooks',
    description:
      'Delays before each retry (±20% jitter); the default spans about a day. The API sets a delivery’s attempts ' +
      'from its length.',
  },
  QUERN_WEBHOOK_ROTATION_OVERLAP_SECONDS: {
    group: 'webhooks',
    description: 'How long deliveries carry both signatures after a secret rotation.',
  },

  QUERN_JOB_TIMEOUT_DEFAULT_MS: {
    group: 'jobs',
    description:
      'Job deadline (`timeout_ms`) when the request gives none (not above `QUERN_JOB_TIMEOUT_MAX_MS`): a job ' +
      'still queued then ends `expired`.',
  },
  QUERN_JOB_TIMEOUT_MAX_MS: { group: 'jobs', description: 'Cap of a job’s deadline (`timeout_ms`).' },
  QUERN_PRIORITY_PREMIUM: {
    group: 'jobs',
    description: 'BullMQ priority of the premium tier (1 is the highest; not below `QUERN_PRIORITY_FREE`).',
  },
  QUERN_PRIORITY_FREE: { group: 'jobs', description: 'BullMQ priority of the free tier.' },
  QUERN_QUEUE_MAX_DEPTH: {
    group: 'jobs',
    description:
      'Waiting jobs per model before `503 queue_full`, on every route that enqueues; checked in one script with ' +
      'the jobs being added, so concurrent submissions cannot pass it together. A partitioned model holds it ' +
      'per partition, divided exactly (the first `cap mod partitions` hold one more; each at least one).',
  },
  QUERN_QUEUE_PARTITIONS: {
    group: 'jobs',
    description:
      'BullMQ queues per model, each under a hash tag of its own, so that one hot model spreads over the ' +
      'shards of a Redis Cluster; a manifest entry may set its own `partitions`. The API puts each job in ' +
      'the partition its id hashes to; workers consume every partition and batch across them. API and ' +
      'workers must agree. Changing it (up or down) is a drain-first move: a job is looked for only in ' +
      'the partition its id hashes to under the current count (docs/operations.md).',
  },
  QUERN_CONCURRENCY_FREE_ROWS: {
    group: 'jobs',
    description:
      'Rows a free key may have queued or running at once, over every model; past it `429 concurrency_limited` ' +
      'with a `Retry-After` (0: no cap). Checked atomically with the queue-depth cap.',
  },
  QUERN_CONCURRENCY_PREMIUM_ROWS: {
    group: 'jobs',
    description: 'The same for a premium key.',
  },
  QUERN_USAGE_RETENTION_DAYS: {
    group: 'jobs',
    description:
      'How long usage per key and hour (jobs, rows, inference time, failures) is kept in Redis; ' +
      '`GET /v1/usage` reads at most this far back.',
  },
  QUERN_FAIR_SHARE: {
    group: 'jobs',
    description:
      'Jobs of the keys of one tier take turns in the queue (weighted by each key’s `weight`), instead of first ' +
      'come first served; premium stays ahead of free. Read by the API (queue order) and the workers (the order ' +
      'of the jobs a worker prefetched): set it alike on both. docs/scheduling.md.',
  },
  QUERN_FAIR_WEIGHT_FREE: {
    group: 'jobs',
    description:
      'Fair-share weight of free keys that have no weight of their own (`PATCH /v1/admin/keys/{id}` sets a ' +
      'key’s). Tiers never share a queue band (premium stays ahead of free), so a tier’s weight counts ' +
      'against the keys of that tier with weights of their own: 2 makes every other free key count double.',
  },
  QUERN_FAIR_WEIGHT_PREMIUM: {
    group: 'jobs',
    description: 'The same for premium keys.',
  },
  QUERN_QUEUE_DEPTH_CACHE_MS: {
    group: 'jobs',
    description:
      'How long a queue depth reading is reused for the early refusal before any work (the cap itself is exact).',
  },
  QUERN_JOB_INPUT_FORMAT: {
    group: 'jobs',
    description:
      'How jobs carry input rows: `packed` float32, or `json` numbers while upgrading from a version before ' +
      'packed rows ([deployment.md](deployment.md)).',
  },
  QUERN_IDEMPOTENCY_TTL_SECONDS: {
    group: 'jobs',
    description: 'How long an `Idempotency-Key` maps to its job.',
  },
  QUERN_CANCEL_WAIT_MS: {
    group: 'jobs',
    description: 'How long `DELETE /v1/jobs/{id}` waits for a worker to drop a job it holds.',
  },
  QUERN_SSE_KEEPALIVE_MS: { group: 'jobs', description: 'Keep-alive comments on event streams.' },
  QUERN_JOB_ATTEMPTS: {
    group: 'jobs',
    description: 'Attempts of a job: transient failures are retried, with exponential backoff, up to this many runs.',
  },
  QUERN_JOB_BACKOFF_MS: {
    group: 'jobs',
    description: 'Delay before the first retry of a transient failure; it doubles with each retry.',
  },
  QUERN_RETAIN_COMPLETED_SECONDS: { group: 'jobs', description: 'How long finished jobs are kept.' },
  QUERN_RETAIN_COMPLETED_COUNT: {
    group: 'jobs',
    description: 'How many finished jobs are kept per queue.',
  },
  QUERN_RETAIN_FAILED_SECONDS: {
    group: 'jobs',
    description: 'How long failed jobs are kept; also canceled-job records and webhook delivery state.',
  },

  QUERN_SYNC_FAST_LANE: {
    group: 'sync',
    description:
      'A small sync job (at most 16 rows) is also pushed over pub/sub to one worker of its model once it is ' +
      'admitted, unless its queue is paused or holds 4 jobs; an idle worker answers it at once, before BullMQ ' +
      'hands the job over (the BullMQ job stays the record, and a busy worker leaves the job to the queue). Off ' +
      'above 16 sync callers per worker in an API process. Set it alike on the API and the workers. ' +
      'docs/architecture.md.',
  },
  QUERN_SYNC_WAIT_DEFAULT_MS: {
    group: 'sync',
    description: 'Sync wait without `Prefer: wait=N` (not above `QUERN_SYNC_WAIT_MAX_MS`).',
  },
  QUERN_SYNC_WAIT_MAX_MS: { group: 'sync', description: 'Cap of the sync wait.' },
  QUERN_WAIT_POLL_INTERVAL_MS: {
    group: 'sync',
    description: 'State poll behind the reply channel and events for waiting callers.',
  },
  QUERN_SYNC_COALESCE_IN_FLIGHT: {
    group: 'sync',
    description:
      'Sync calls of one principal and model share jobs: jobs in flight per group before new calls gather into ' +
      'one job (`0`: off); a job its calls already fill goes at once. 1 measured best on 2 cores at 8 and 32 concurrent ' +
      'callers: every job costs BullMQ several fetch round trips, so fewer, fuller jobs win.',
  },
  QUERN_SYNC_COALESCE_MAX_ROWS: {
    group: 'sync',
    description: 'Rows per shared job (never above the model’s `max_batch_size`).',
  },

  QUERN_CACHE_TTL_SECONDS: {
    group: 'cache',
    description: 'Result cache lifetime (`0` disables it).',
  },

  QUERN_MODELS_DIR: {
    group: 'models',
    description: 'Folder with `manifest.json` and the `.onnx` files.',
    defaultText: 'the repository’s `models/` folder',
  },

  QUERN_WORKER_MODELS: {
    group: 'worker',
    description: 'Models this worker serves (comma-separated; empty: all).',
  },
  QUERN_WORKER_THREADS: {
    group: 'worker',
    description: 'Inference threads (one ONNX Runtime session per model each).',
    defaultText: 'the machine’s cores (`os.availableParallelism()`)',
  },
  QUERN_WORKER_MODEL_MEMORY_MB: {
    group: 'worker',
    description:
      'Memory budget for model weights, in MiB: a version whose load would push the estimate (each loaded ' +
      'version’s file size × its sessions, one per inference thread plus the inline one) past it is refused, ' +
      'and the versions already loaded keep serving. 0: no budget.',
  },
  QUERN_WORKER_PREFETCH: {
    group: 'worker',
    description: 'Jobs a worker holds per model (BullMQ concurrency).',
    defaultNote: '(`0`: `min(1024, max_batch_size × threads × 2)`)',
  },
  QUERN_WORKER_INLINE_MAX_ROWS: {
    group: 'worker',
    description:
      'Batches of at most this many rows run on the worker’s main thread (no thread hop) for models whose such ' +
      'batch measures at most `QUERN_WORKER_INLINE_MAX_MS` (`0` rows: off).',
  },
  QUERN_WORKER_INLINE_MAX_MS: {
    group: 'worker',
    description: 'Longest a small batch may measure at start for its model to run such batches inline.',
  },
  QUERN_WORKER_PORT: {
    group: 'worker',
    description: 'Worker’s `/metrics`, `/healthz`, `/readyz`.',
    defaultNote: '(`pnpm start`: a free port)',
  },
  QUERN_LOCK_DURATION_MS: { group: 'worker', description: 'BullMQ lock duration of a job.' },
  QUERN_STALLED_INTERVAL_MS: { group: 'worker', description: 'BullMQ stall check interval.' },
  QUERN_MAX_STALLED_COUNT: {
    group: 'worker',
    description: 'Stalls a job may have before BullMQ fails it (`worker_lost`).',
  },

  QUERN_SHUTDOWN_TIMEOUT_MS: {
    group: 'lifecycle',
    description: 'Worker’s drain deadline on SIGTERM; after it, the jobs’ locks expire and another worker takes them.',
  },
  QUERN_API_SHUTDOWN_GRACE_MS: {
    group: 'lifecycle',
    description:
      'API on SIGTERM: how long sync callers keep waiting before they get `202` with the job (it goes on in the ' +
      'queue) and event streams close; the API exits at most 5 s later.',
  },
  QUERN_HEARTBEAT_INTERVAL_MS: { group: 'lifecycle', description: 'Worker heartbeat interval.' },
  QUERN_HEARTBEAT_TTL_MS: {
    group: 'lifecycle',
    description: 'How old a worker heartbeat may be for the API’s `/ready` (longer than the interval).',
  },
};

/** Variables read outside the schema, by the local launcher (`pnpm start`) alone. */
export const LAUNCHER_VARIABLES: Record<string, { default: string; description: string }> = {
  QUERN_DATA_DIR: {
    default: '`.data`',
    description: 'The embedded Redis’s data and the development key file.',
  },
};
