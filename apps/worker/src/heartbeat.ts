import type { KeySpace, Logger, RedisClient } from '@quern/shared';

/**
 * Announces this worker in a sorted set scored by the time of its last beat. The API's
 * readiness check and the `quern_workers_alive` gauge count members seen within the TTL.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly workerId: string,
    private readonly intervalMs: number,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const beat = () => {
      const now = Date.now();
      this.redis
        .multi()
        .zadd(this.keys.workers(), now, this.workerId)
        .zremrangebyscore(this.keys.workers(), '-inf', now - this.ttlMs * 4)
        .exec()
        .catch((err: Error) => this.logger.warn({ err: err.message }, 'heartbeat failed'));
    };
    beat();
    this.timer = setInterval(beat, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.redis.zrem(this.keys.workers(), this.workerId).catch(() => undefined);
  }
}
