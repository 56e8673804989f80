import type { KeySpace } from './keys';
import { type BatchCommand, execBatch, type RedisClient } from './redis';
import { TurnBuffer } from './turn-buffer';

/**
 * Usage per key per hour: jobs that succeeded, their rows, their share of inference time, and
 * jobs that failed for good. One Redis hash per key and hour (`usage(owner, hour)`), written by
 * the workers when jobs end and expiring after the retention, read by the API. Kept out of
 * metric labels on purpose: a label per key would grow Prometheus' series without bound.
 */
export interface UsageHour {
  /** The hour's start, ISO 8601. */
  hour: string;
  jobs: number;
  rows: number;
  inference_ms: number;
  failed_jobs: number;
}

const HOUR_MS = 3_600_000;

export const hourOf = (ms: number): number => Math.floor(ms / HOUR_MS);

/** What one finished job adds to its owner's hour. */
export interface UsageEntry {
  owner: string;
  at: number;
  succeeded: boolean;
  rows: number;
  inferenceMs: number;
}

/**
 * Records usage in one pipeline per event-loop turn (one per shard on a Cluster; the worker's side),
 * the turn's jobs summed per key and hour.
 */
export class UsageRecorder {
  private readonly pending: TurnBuffer<UsageEntry>;

  constructor(redis: RedisClient, keys: KeySpace, retentionDays: number, onError: (err: Error) => void = () => {}) {
    const ttl = retentionDays * 24 * 3600;
    this.pending = new TurnBuffer((entries) => {
      // Summed per key and hour first: a batch ends many jobs of one owner in the same turn, and
      // each command lands on that owner's shard (a single busy key's shard is a Cluster's limit).
      const sums = new Map<string, { jobs: number; rows: number; inferenceMs: number; failed: number }>();
      for (const e of entries) {
        const key = keys.usage(e.owner, hourOf(e.at));
        let sum = sums.get(key);
        if (!sum) {
          sum = { jobs: 0, rows: 0, inferenceMs: 0, failed: 0 };
          sums.set(key, sum);
        }
        if (e.succeeded) {
          sum.jobs++;
          sum.rows += e.rows;
          sum.inferenceMs += e.inferenceMs;
        } else {
          sum.failed++;
        }
      }
      const commands: BatchCommand[] = [];
      for (const [key, sum] of sums) {
        if (sum.jobs > 0) {
          commands.push(['hincrby', key, 'jobs', sum.jobs], ['hincrby', key, 'rows', sum.rows]);
          commands.push(['hincrbyfloat', key, 'inference_ms', sum.inferenceMs]);
        }
        if (sum.failed > 0) commands.push(['hincrby', key, 'failed_jobs', sum.failed]);
        commands.push(['expire', key, ttl]);
      }
      execBatch(redis, commands).then(
        (replies) => {
          const failed = replies.find(([err]) => err);
          if (failed?.[0]) onError(failed[0]);
        },
        (err: Error) => onError(err),
      );
    }, 'turn');
  }

  record(entry: UsageEntry): void {
    this.pending.push(entry);
  }
}

/** The owner's usage over the last `hours` hours (the current one included), oldest first. */
export async function readUsage(
  redis: RedisClient,
  keys: KeySpace,
  owner: string,
  hours: number,
  now = Date.now(),
): Promise<UsageHour[]> {
  const last = hourOf(now);
  const wanted = Array.from({ length: hours }, (_, i) => last - hours + 1 + i);
  const pipeline = redis.pipeline();
  for (const h of wanted) pipeline.hgetall(keys.usage(owner, h));
  const results = (await pipeline.exec()) ?? [];
  return wanted.map((h, i) => {
    const hash = (results[i]?.[1] ?? {}) as Record<string, string>;
    return {
      hour: new Date(h * HOUR_MS).toISOString(),
      jobs: Number(hash.jobs ?? 0),
      rows: Number(hash.rows ?? 0),
      inference_ms: Math.round(Number(hash.inference_ms ?? 0) * 1000) / 1000,
      failed_jobs: Number(hash.failed_jobs ?? 0),
    };
  });
}

/** Reads usage for the API's routes (`GET /v1/usage`, `GET /v1/admin/keys/{id}/usage`). */
export class UsageReader {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
  ) {}

  read(owner: string, hours: number): Promise<UsageHour[]> {
    return readUsage(this.redis, this.keys, owner, hours);
  }
}
