import calculateSlot from 'cluster-key-slot';

/** Redis Cluster's hash slots. */
const SLOTS = 16_384;

/** True if the prefix carries a Redis Cluster hash tag (`{…}` with something inside). */
export function hasHashTag(prefix: string): boolean {
  return /\{[^{}]+\}/.test(prefix);
}

/**
 * The partition (0 to `partitions` − 1) of a job: a hash of its id, so that any API process finds
 * a job's queue from the id alone (FNV-1a, 32 bits).
 */
export function partitionOf(jobId: string, partitions: number): number {
  if (partitions <= 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < jobId.length; i++) {
    h ^= jobId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/**
 * Every Redis key and queue name Quern uses comes from here, so the prefix is applied in exactly
 * one place, and so is the placement of keys on a Redis Cluster's slots.
 *
 * Two layouts. With a hash tag in the prefix (`{quern}`), or without a Cluster, names are as they
 * always were: a tagged prefix puts every key in one slot. With a Cluster and an untagged prefix
 * (`spread`), only keys that one script or transaction uses together share a slot: each BullMQ
 * queue (one per model and partition) has a tag of its own, which its admission and fair-share
 * state share, and a principal's row ledger and recent jobs share the principal's tag (as do its
 * rate-limit windows); everything else (cache, idempotency, API keys, heartbeats) is spread by
 * its own name.
 */
export class KeySpace {
  /** Keys placed by what is used together (see the class comment); false: the classic layout. */
  readonly spread: boolean;

  private readonly partitionsOf: (model: string) => number;
  private readonly queueNames = new Map<string, string>();

  constructor(
    readonly prefix: string,
    options: {
      cluster?: boolean;
      /** BullMQ queues (partitions) of each model; 1 when omitted. */
      partitions?: (model: string) => number;
    } = {},
  ) {
    this.spread = (options.cluster ?? false) && !hasHashTag(prefix);
    this.partitionsOf = options.partitions ?? (() => 1);
  }

  /**
   * The layout a deployment's settings give: spread on a Cluster with an untagged prefix, and
   * each model's partitions (`partitions` of its manifest entry, else `QUERN_QUEUE_PARTITIONS`).
   */
  static of(
    config: { QUERN_REDIS_PREFIX: string; REDIS_CLUSTER_NODES: readonly string[]; QUERN_QUEUE_PARTITIONS?: number },
    partitions?: (model: string) => number,
  ): KeySpace {
    return new KeySpace(config.QUERN_REDIS_PREFIX, {
      cluster: config.REDIS_CLUSTER_NODES.length > 0,
      partitions: partitions ?? (() => config.QUERN_QUEUE_PARTITIONS ?? 1),
    });
  }

  /** BullMQ queues of a model: one per partition. */
  partitions(model: string): number {
    return Math.max(1, this.partitionsOf(model));
  }

  /** `name`, or `{name}` in the spread layout: a hash tag of its own. */
  private tag(name: string): string {
    return this.spread ? `{${name}}` : name;
  }

  /**
   * BullMQ queue of one model's partition; BullMQ itself prepends the prefix (`prefix:name:…`), so
   * in the spread layout the name's tag puts the whole queue in one slot. Partition 0 keeps the
   * name a model's single queue always had.
   */
  inferenceQueue(model: string, partition = 0): string {
    const name = `infer-${model}${partition > 0 ? `.${partition}` : ''}`;
    if (!this.spread) return name;
    const count = this.partitions(model);
    if (count <= 1) return `{${name}}`;
    const cacheKey = `${model}/${partition}/${count}`;
    let tagged = this.queueNames.get(cacheKey);
    if (tagged === undefined) {
      // Partition p of n takes a tag whose slot lies in the middle of the p-th n-th of the slots
      // (a counter appended until one does): a cluster whose masters hold equal ranges of slots,
      // as `redis-cli --cluster create` makes them, then holds n / masters partitions each,
      // instead of wherever the plain names happen to hash.
      const width = SLOTS / count;
      const lo = Math.floor(partition * width + width / 4);
      const hi = Math.ceil(partition * width + (3 * width) / 4);
      let found = name;
      for (let k = 1; k < 100_000; k++) {
        const slot = calculateSlot(found);
        if (slot >= lo && slot < hi) break;
        found = `${name}~${k}`;
      }
      tagged = `{${found}}`;
      this.queueNames.set(cacheKey, tagged);
    }
    return tagged;
  }

  /** BullMQ queue of webhook deliveries. */
  webhookQueue(): string {
    return this.tag('webhooks');
  }

  /** What a queue's own keys are named by: its (tagged) name when spread, else the model (and partition). */
  private queueState(model: string, partition: number): string {
    return this.spread ? this.inferenceQueue(model, partition) : `${model}${partition > 0 ? `.${partition}` : ''}`;
  }

  /** A principal's id as it appears in the keys several of which one script uses (tagged when spread). */
  principal(owner: string): string {
    return this.tag(owner);
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

  /** Admissions to one queue (model and partition) whose job is not in the queue yet (job id → admitted at, ms). */
  queueAdmissions(model: string, partition = 0): string {
    return `${this.prefix}:admit:${this.queueState(model, partition)}`;
  }

  /** Fair-share state of one queue (model and partition): virtual time per priority class and each key's finish tag. */
  fairShare(model: string, partition = 0): string {
    return `${this.prefix}:fair:${this.queueState(model, partition)}`;
  }

  /** A principal's usage in one hour (hours since the epoch): see usage.ts; its hours share a slot. */
  usage(owner: string, hour: number): string {
    return `${this.prefix}:usage:${this.principal(owner)}:${hour}`;
  }

  /** A principal's recent jobs, newest last (job id → created at, ms): `GET /v1/jobs` lists them. */
  ownerJobs(owner: string): string {
    return `${this.prefix}:jobs:${this.principal(owner)}`;
  }

  /** A principal's queued-or-running jobs: job id → rows, and `total` (see admission.ts). */
  keyRows(owner: string): string {
    return `${this.prefix}:rows:${this.principal(owner)}`;
  }

  /** When each of a principal's entries in `keyRows` is given up as leaked (job id → epoch ms). */
  keyRowsExpiry(owner: string): string {
    return `${this.prefix}:rowsexp:${this.principal(owner)}`;
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

  /** Workers that take a model's sync jobs over the fast lane: worker id → last announced (ms since epoch). */
  fastLaneWorkers(model: string): string {
    return `${this.prefix}:fastlane:workers:${model}`;
  }

  /** A job's early answer over the fast lane (its result, for a minute): the record another worker completes it from. */
  earlyAnswer(jobId: string): string {
    return `${this.prefix}:early:${jobId}`;
  }

  /** Pub/sub channel of one worker's fast lane: API processes push small sync jobs to it. */
  fastLaneChannel(workerId: string): string {
    return `${this.prefix}:fastlane:${workerId}`;
  }

  /** Sorted set of worker ids scored by their last heartbeat (ms since epoch). */
  workers(): string {
    return `${this.prefix}:workers`;
  }
}
