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

  /** Sorted set of worker ids scored by their last heartbeat (ms since epoch). */
  workers(): string {
    return `${this.prefix}:workers`;
  }
}
