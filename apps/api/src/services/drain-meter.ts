import type { QueueEvents } from 'bullmq';

const WINDOW_SECONDS = 60;

/**
 * Completions per second of each model's queues over the last minute, counted from the QueueEvents
 * stream this API process already reads. A full queue's Retry-After is estimated from it.
 */
export class DrainMeter {
  /** Per model: completions per second-bucket, as [epoch second, count] in a ring. */
  private readonly buckets = new Map<string, Map<number, number>>();
  private readonly since = Date.now();

  constructor(events: ReadonlyMap<string, { events: readonly QueueEvents[] }>) {
    for (const [model, { events: streams }] of events) {
      const buckets = new Map<number, number>();
      this.buckets.set(model, buckets);
      const completed = () => {
        const second = Math.floor(Date.now() / 1000);
        buckets.set(second, (buckets.get(second) ?? 0) + 1);
        if (buckets.size > WINDOW_SECONDS * 2) {
          for (const key of buckets.keys()) if (key < second - WINDOW_SECONDS) buckets.delete(key);
        }
      };
      // A partitioned model: every partition's completions count for the model.
      for (const stream of streams) stream.on('completed', completed);
    }
  }

  perSecond(model: string): number {
    const buckets = this.buckets.get(model);
    if (!buckets) return 0;
    const now = Math.floor(Date.now() / 1000);
    let total = 0;
    for (const [second, count] of buckets) if (second > now - WINDOW_SECONDS) total += count;
    const window = Math.min(WINDOW_SECONDS, Math.max(1, (Date.now() - this.since) / 1000));
    return total / window;
  }
}
