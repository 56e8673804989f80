import type { KeySpace, Logger, RedisClient } from '@quern/shared';

/**
 * One beat: `member` scored now in the sorted set `set`, and members silent for four TTLs removed.
 * The heartbeat's and the fast lane's announcements (fast-lane.ts) both beat this way.
 */
export function beat(redis: RedisClient, set: string, member: string, ttlMs: number): Promise<unknown> {
  const now = Date.now();
  return redis
    .multi()
    .zadd(set, now, member)
    .zremrangebyscore(set, '-inf', now - ttlMs * 4)
    .exec();
}

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
    const once = () => {
      beat(this.redis, this.keys.workers(), this.workerId, this.ttlMs).catch((err: Error) =>
        this.logger.warn({ err: err.message }, 'heartbeat failed'),
      );
    };
    once();
    this.timer = setInterval(once, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.redis.zrem(this.keys.workers(), this.workerId).catch(() => undefined);
  }
}
