import type { Job, JobsOptions, Queue } from 'bullmq';

interface PendingAdd {
  name: string;
  data: unknown;
  opts: JobsOptions;
  resolve: (job: Job) => void;
  reject: (err: unknown) => void;
}

/**
 * Adds jobs to one queue in groups: every add requested in the same event-loop turn goes out
 * as one `addBulk` (one write to Redis, one transaction) instead of one round trip each. At idle
 * a lone add waits only for the end of the current turn.
 */
export class AddBatcher {
  private pending: PendingAdd[] = [];
  private scheduled = false;

  constructor(
    private readonly queue: Queue,
    private readonly maxBatch = 256,
  ) {}

  add(name: string, data: unknown, opts: JobsOptions): Promise<Job> {
    return new Promise((resolve, reject) => {
      this.pending.push({ name, data, opts, resolve, reject });
      if (this.pending.length >= this.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          if (this.scheduled) this.flush();
        });
      }
    });
  }

  /** Sends what is pending now instead of at the end of the turn (a caller that batched already). */
  flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    this.queue.addBulk(batch.map(({ name, data, opts }) => ({ name, data, opts }))).then(
      (jobs) => {
        batch.forEach((p, i) => {
          const job = jobs[i];
          if (job) p.resolve(job);
          else p.reject(new Error('addBulk returned fewer jobs than it was given'));
        });
      },
      (err: unknown) => {
        for (const p of batch) p.reject(err);
      },
    );
  }
}
