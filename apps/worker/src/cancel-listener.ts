import {
  CANCEL_REMEMBER_SECONDS,
  createRedis,
  type KeySpace,
  type Logger,
  type RedisClient,
  type WorkerConfig,
} from '@quern/shared';
import type { BatchScheduler } from './batch-scheduler';

/** As long as the API keeps the cancel record (one number for both: shared contracts). */
const REMEMBER_MS = CANCEL_REMEMBER_SECONDS * 1000;

/**
 * Hears cancel requests for jobs a worker may hold (the API publishes them), drops a held job at
 * once if no batch has it yet, and remembers the id so the job is dropped if it arrives later.
 */
export class CancelListener {
  private readonly canceled = new Map<string, number>();
  private readonly subscriber: RedisClient;

  constructor(
    config: WorkerConfig,
    private readonly keys: KeySpace,
    private readonly scheduler: BatchScheduler,
    logger: Logger,
  ) {
    this.subscriber = createRedis(config, 'consumer', { name: 'worker-cancel', logger });
    this.subscriber.on('message', (_channel: string, jobId: string) => this.onCancel(jobId));
  }

  async start(): Promise<void> {
    await this.subscriber.subscribe(this.keys.cancelChannel());
  }

  private onCancel(jobId: string): void {
    const now = Date.now();
    this.canceled.set(jobId, now);
    this.scheduler.cancel(jobId);
    if (this.canceled.size > 10_000) {
      for (const [id, at] of this.canceled) if (now - at > REMEMBER_MS) this.canceled.delete(id);
    }
  }

  /** Marks a job canceled from a cancel record found in Redis (a request this process did not hear). */
  remember(jobId: string): void {
    this.canceled.set(jobId, Date.now());
  }

  isCanceled(jobId: string): boolean {
    return this.canceled.has(jobId);
  }

  async close(): Promise<void> {
    await this.subscriber.quit().catch(() => this.subscriber.disconnect());
  }
}
