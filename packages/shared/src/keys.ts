/**
 * Every Redis key and queue name Quern uses comes from here, so the prefix (which may carry a
 * Cluster hash tag such as `{quern}`) is applied in exactly one place.
 */
export class KeySpace {
  constructor(readonly prefix: string) {}

  /** BullMQ queue of one model; BullMQ itself prepends the prefix. */
  inferenceQueue(model: string): string {
    return `infer-${model}`;
  }

  /** Cached output of one input row: model, version and a hash of the canonical input. */
  cache(model: string, version: string, inputHash: string): string {
    return `${this.prefix}:cache:${model}:${version}:${inputHash}`;
  }

  /** API key id (`key_…`) by the SHA-256 (hex) of the key. */
  apiKeyByHash(sha256Hex: string): string {
    return `${this.prefix}:apikey:hash:${sha256Hex}`;
  }

  /** Hash of one API key's record (never the key itself). */
  apiKey(id: string): string {
    return `${this.prefix}:apikey:id:${id}`;
  }

  /** Sorted set of API key ids by creation time, for listings. */
  apiKeyIds(): string {
    return `${this.prefix}:apikey:ids`;
  }

  /** Prefix of one rate-limit window's counters (the principal's id follows; rate-limiter-flexible's layout). */
  rateLimit(name: string): string {
    return `${this.prefix}:rl:${name}`;
  }

  /** A principal's sealed webhook signing secrets. */
  webhookSecret(owner: string): string {
    return `${this.prefix}:whsec:${owner}`;
  }

  /** Delivery state of a job's webhook events (one field per event). */
  webhookState(jobId: string): string {
    return `${this.prefix}:webhook:${jobId}`;
  }

  /** Circuit breaker of one webhook receiver origin (`https://host:port`), shared by every worker. */
  webhookBreaker(origin: string): string {
    return `${this.prefix}:whbreaker:${origin}`;
  }

  /** Record of a job canceled before it ran (BullMQ no longer has it). */
  canceledJob(jobId: string): string {
    return `${this.prefix}:canceled:${jobId}`;
  }

  /** Cancel request of a job a worker may hold; workers also hear it on `cancelChannel`. */
  cancelRequest(jobId: string): string {
    return `${this.prefix}:cancel:${jobId}`;
  }

  cancelChannel(): string {
    return `${this.prefix}:cancel`;
  }

  /** Pub/sub channel of one API process: workers publish the replies of the sync jobs it waits on. */
  replyChannel(instance: string): string {
    return `${this.prefix}:reply:${instance}`;
  }

  /** Idempotency record: principal and a hash of the client's key. */
  idempotency(owner: string, keyHash: string): string {
    return `${this.prefix}:idem:${owner}:${keyHash}`;
  }

  /** Admissions to one model's queue whose job is not in the queue yet (job id → admitted at, ms). */
  queueAdmissions(model: string): string {
    return `${this.prefix}:admit:${model}`;
  }

  /** Fair-share state of one model's queue: virtual time per priority class and each key's finish tag. */
  fairShare(model: string): string {
    return `${this.prefix}:fair:${model}`;
  }

  /** A principal's usage in one hour (hours since the epoch): see usage.ts. */
  usage(owner: string, hour: number): string {
    return `${this.prefix}:usage:${owner}:${hour}`;
  }

  /** A principal's recent jobs, newest last (job id → created at, ms): `GET /v1/jobs` lists them. */
  ownerJobs(owner: string): string {
    return `${this.prefix}:jobs:${owner}`;
  }

  /** A principal's queued-or-running jobs: job id → rows, and `total` (see admission.ts). */
  keyRows(owner: string): string {
    return `${this.prefix}:rows:${owner}`;
  }

  /** When each of a principal's entries in `keyRows` is given up as leaked (job id → epoch ms). */
  keyRowsExpiry(owner: string): string {
    return `${this.prefix}:rowsexp:${owner}`;
  }

  /** Hash of model name → its version routing (see model-routing.ts). */
  modelRouting(): string {
    return `${this.prefix}:routing`;
  }

  /** Pub/sub channel on which a changed model's name is published. */
  modelRoutingChannel(): string {
    return `${this.prefix}:routing:changed`;
  }

  /** Each worker's load outcome of each version of a model (`worker|version` → report). */
  modelLoads(model: string): string {
    return `${this.prefix}:loads:${model}`;
  }

  /** Differences between a shadow version's outputs and the live version's (see model-routing.ts). */
  shadowStats(model: string, version: string): string {
    return `${this.prefix}:shadow:${model}:${version}`;
  }

  /** Sorted set of worker ids scored by their last heartbeat (ms since epoch). */
  workers(): string {
    return `${this.prefix}:workers`;
  }
}
