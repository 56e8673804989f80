import { decodeJobError, InferenceResult, type JobErrorCode, type Logger } from '@quern/shared';
import type { Queue, QueueEvents } from 'bullmq';

export type WaitOutcome =
  | { kind: 'completed'; result: InferenceResult }
  | { kind: 'failed'; code: JobErrorCode; message: string }
  /** The job was removed (canceled while queued) before it finished. */
  | { kind: 'gone' }
  | { kind: 'timeout' };

export interface WaitHandle {
  /** Resolves with the job's outcome, or `timeout` after `timeoutMs`. Call once. */
  wait(timeoutMs: number): Promise<WaitOutcome>;
  /** Forget the waiter (the job was never added, or the caller went away). */
  cancel(): void;
}

interface Waiter {
  jobId: string;
  queue: Queue;
  /** When the caller started waiting (after the job was added); 0 before that. */
  waitingSince: number;
  settle: ((outcome: WaitOutcome) => void) | undefined;
  early: WaitOutcome | undefined;
}

/**
 * Lets sync callers wait for their job without a Redis subscription each: one QueueEvents
 * stream per model queue in this process, and a map from job id to waiter. A waiter is
 * registered before its job is added, so a job that finishes at once is not missed. A periodic
 * state poll catches any event lost while the events connection was down.
 */
export class ResultWaiter {
  private readonly waiters = new Map<string, Waiter>();
  private poller: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly events: ReadonlyMap<string, { queue: Queue; events: QueueEvents }>,
    private readonly pollIntervalMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    for (const { events } of this.events.values()) {
      events.on('completed', ({ jobId, returnvalue }) => this.onCompleted(jobId, returnvalue));
      events.on('failed', ({ jobId, failedReason }) => {
        const { code, message } = decodeJobError(failedReason);
        this.settle(jobId, { kind: 'failed', code, message });
      });
      events.on('removed', ({ jobId }) => this.settle(jobId, { kind: 'gone' }));
      events.on('error', (err) => this.logger.warn({ err: (err as Error).message }, 'queue events error'));
    }
    this.poller = setInterval(() => void this.poll(), this.pollIntervalMs);
    this.poller.unref();
  }

  async close(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    for (const waiter of this.waiters.values()) waiter.settle?.({ kind: 'timeout' });
    this.waiters.clear();
  }

  /** Number of callers waiting right now (a gauge for operators, a check for tests). */
  get size(): number {
    return this.waiters.size;
  }

  register(jobId: string, model: string): WaitHandle {
    const entry = this.events.get(model);
    if (!entry) throw new Error(`no queue events for model ${model}`);
    const waiter: Waiter = {
      jobId,
      queue: entry.queue,
      waitingSince: 0,
      settle: undefined,
      early: undefined,
    };
    this.waiters.set(jobId, waiter);
    return {
      wait: (timeoutMs) =>
        new Promise<WaitOutcome>((resolve) => {
          if (waiter.early) {
            this.waiters.delete(jobId);
            resolve(waiter.early);
            return;
          }
          waiter.waitingSince = Date.now();
          const timer = setTimeout(() => {
            this.waiters.delete(jobId);
            resolve({ kind: 'timeout' });
          }, timeoutMs);
          waiter.settle = (outcome) => {
            clearTimeout(timer);
            this.waiters.delete(jobId);
            resolve(outcome);
          };
        }),
      cancel: () => {
        waiter.settle?.({ kind: 'timeout' });
        this.waiters.delete(jobId);
      },
    };
  }

  private onCompleted(jobId: string, returnvalue: unknown): void {
    if (!this.waiters.has(jobId)) return;
    const raw = typeof returnvalue === 'string' ? safeJson(returnvalue) : returnvalue;
    const parsed = InferenceResult.safeParse(raw);
    this.settle(
      jobId,
      parsed.success
        ? { kind: 'completed', result: parsed.data }
        : { kind: 'failed', code: 'internal_error', message: 'the worker returned a malformed result' },
    );
  }

  private settle(jobId: string, outcome: WaitOutcome): void {
    const waiter = this.waiters.get(jobId);
    if (!waiter) return;
    if (waiter.settle) waiter.settle(outcome);
    else waiter.early = outcome; // finished before the caller started waiting
  }

  /** Safety net: looks up waiters older than one poll interval whose event may have been lost. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const cutoff = Date.now() - this.pollIntervalMs;
      // Only waiters whose job was added (wait() was called) and that have waited a full interval.
      const stale = [...this.waiters.values()].filter((w) => w.waitingSince > 0 && w.waitingSince <= cutoff);
      await Promise.all(
        stale.map(async (w) => {
          const state = await w.queue.getJobState(w.jobId);
          if (state === 'completed' || state === 'failed') {
            const job = await w.queue.getJob(w.jobId);
            if (!job) return;
            if (state === 'completed') this.onCompleted(w.jobId, job.returnvalue);
            else this.settle(w.jobId, { kind: 'failed', ...decodeJobError(job.failedReason) });
          } else if (state === 'unknown') {
            this.settle(w.jobId, { kind: 'gone' });
          }
        }),
      );
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, 'waiter poll failed');
    } finally {
      this.polling = false;
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
