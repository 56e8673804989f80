import { decodeFailure, InferenceResult, type JobFailure, type JobReply, type Logger } from '@quern/shared';
import type { Job, JobState, QueueEvents } from 'bullmq';

/** How long a worker's reply is kept for reads of its job (BullMQ records the finish within it). */
const RECENT_MS = 5_000;
const RECENT_MAX = 10_000;

export type WaitOutcome =
  | { kind: 'completed'; result: InferenceResult }
  | { kind: 'failed'; failure: JobFailure }
  /** The job was removed (canceled while queued) before it finished. */
  | { kind: 'gone' }
  | { kind: 'timeout' };

/** A change of one job, as a QueueEvents stream reports it. */
export type JobEvent = { kind: 'active' } | Exclude<WaitOutcome, { kind: 'timeout' }>;

export interface WaitHandle {
  /** Resolves with the job's outcome, or `timeout` after `timeoutMs`. Call once. */
  wait(timeoutMs: number): Promise<WaitOutcome>;
  /** Forget the waiter (the job was never added, or the caller went away). */
  cancel(): void;
}

/** Where a job's outcome was heard: the worker's direct reply, the QueueEvents stream, or the state poll. */
export type AnswerSource = 'reply' | 'events' | 'poll';

type Listener = (event: JobEvent, source: AnswerSource) => void;

/** Where a model's job is read by id (its queues: `ModelQueues`, one per partition). */
export interface JobLookup {
  getJob(jobId: string): Promise<Job | undefined>;
  getJobState(jobId: string): Promise<JobState | 'unknown'>;
}

interface Waiter {
  jobId: string;
  queue: JobLookup;
  /** When the caller started waiting (after the job was added); 0 before that. */
  waitingSince: number;
  settle: ((outcome: WaitOutcome) => void) | undefined;
  early: WaitOutcome | undefined;
  answered: boolean;
}

/**
 * Per API process: one QueueEvents stream per model queue (per partition), fanned out to the callers that wait
 * for, or stream, a given job (a map from job id to listeners), instead of a Redis subscription
 * per request. Waiters are registered before their job is added, so a job that finishes at once
 * is not missed; a periodic state poll catches an event lost while the events connection was down.
 */
export class ResultWaiter {
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly waiters = new Set<Waiter>();
  private readonly recent = new Map<string, { reply: JobReply; at: number }>();
  private poller: NodeJS.Timeout | undefined;
  private polling = false;
  private isDraining = false;

  constructor(
    private readonly events: ReadonlyMap<string, { queue: JobLookup; events: readonly QueueEvents[] }>,
    private readonly pollIntervalMs: number,
    private readonly logger: Logger,
    /** Counts each waiting caller's answer by where it came from (a lost reply shows as `events` or `poll`). */
    private readonly onAnswer: (source: AnswerSource) => void = () => undefined,
  ) {}

  start(): void {
    for (const events of [...this.events.values()].flatMap((e) => e.events)) {
      events.on('active', ({ jobId }) => this.emit(jobId, { kind: 'active' }, 'events'));
      events.on('completed', ({ jobId, returnvalue }) => {
        // Parsed only if someone here waits for or streams this job.
        if (this.listeners.has(jobId)) this.emit(jobId, completedEvent(returnvalue), 'events');
      });
      events.on('failed', ({ jobId, failedReason }) =>
        this.emit(jobId, { kind: 'failed', failure: decodeFailure(failedReason) }, 'events'),
      );
      events.on('removed', ({ jobId }) => this.emit(jobId, { kind: 'gone' }, 'events'));
      events.on('error', (err) => this.logger.warn({ err: (err as Error).message }, 'queue events error'));
    }
    this.poller = setInterval(() => void this.poll(), this.pollIntervalMs);
    this.poller.unref();
  }

  async close(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    for (const waiter of this.waiters) waiter.settle?.({ kind: 'timeout' });
    this.waiters.clear();
    this.listeners.clear();
  }

  /**
   * Shutdown: every caller still waiting is told `timeout` now (its route answers `202` with the
   * job, which goes on in the queue), a wait that starts later ends at once, and event streams
   * close (clients reconnect to another API process).
   */
  drain(): void {
    this.isDraining = true;
    for (const waiter of [...this.waiters]) waiter.settle?.({ kind: 'timeout' });
    // A cue, not a state change: streams read the job again, see the drain, and end.
    for (const jobId of [...this.listeners.keys()]) this.emit(jobId, { kind: 'active' }, 'events');
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /** Callers waiting right now (a gauge for operators, a check for tests). */
  get size(): number {
    return this.waiters.size;
  }

  /** Calls `listener` on every change of the job until the returned function is called. */
  subscribe(jobId: string, listener: Listener): () => void {
    let set = this.listeners.get(jobId);
    if (!set) {
      set = new Set();
      this.listeners.set(jobId, set);
    }
    set.add(listener);
    return () => {
      const current = this.listeners.get(jobId);
      current?.delete(listener);
      if (current?.size === 0) this.listeners.delete(jobId);
    };
  }

  /**
   * A worker's direct reply. It is kept a few seconds (`recentReply`): it arrives before BullMQ
   * records the job as finished, and a caller that reads its job right after its answer must see
   * the job finished.
   */
  deliver(reply: JobReply): void {
    this.recent.set(reply.job_id, { reply, at: Date.now() });
    if (this.recent.size > RECENT_MAX) {
      // Oldest first (insertion order): drop what is past its time, and at least the oldest.
      for (const [id, entry] of this.recent) {
        if (this.recent.size <= RECENT_MAX && Date.now() - entry.at < RECENT_MS) break;
        this.recent.delete(id);
      }
    }
    this.emit(
      reply.job_id,
      reply.kind === 'completed'
        ? { kind: 'completed', result: reply.result }
        : { kind: 'failed', failure: reply.failure },
      'reply',
    );
  }

  /** The reply heard for `jobId` in the last few seconds, if any. */
  recentReply(jobId: string): JobReply | undefined {
    const entry = this.recent.get(jobId);
    return entry && Date.now() - entry.at < RECENT_MS ? entry.reply : undefined;
  }

  private emit(jobId: string, event: JobEvent, source: AnswerSource): void {
    const set = this.listeners.get(jobId);
    if (!set) return;
    for (const listener of [...set]) listener(event, source);
  }

  /** Registers a waiter for a job's outcome; call before adding the job. */
  register(jobId: string, model: string): WaitHandle {
    const entry = this.events.get(model);
    if (!entry) throw new Error(`no queue events for model ${model}`);
    const waiter: Waiter = {
      jobId,
      queue: entry.queue,
      waitingSince: 0,
      settle: undefined,
      early: undefined,
      answered: false,
    };
    this.waiters.add(waiter);
    const unsubscribe = this.subscribe(jobId, (event, source) => {
      if (event.kind === 'active') return;
      if (!waiter.answered) {
        waiter.answered = true;
        this.onAnswer(source);
      }
      if (waiter.settle) waiter.settle(event);
      else waiter.early ??= event; // finished before the caller started waiting
    });
    const done = () => {
      unsubscribe();
      this.waiters.delete(waiter);
    };
    return {
      wait: (timeoutMs) =>
        new Promise<WaitOutcome>((resolve) => {
          if (waiter.early || this.draining) {
            done();
            resolve(waiter.early ?? { kind: 'timeout' });
            return;
          }
          waiter.waitingSince = Date.now();
          const timer = setTimeout(() => {
            done();
            resolve({ kind: 'timeout' });
          }, timeoutMs);
          waiter.settle = (outcome) => {
            clearTimeout(timer);
            done();
            resolve(outcome);
          };
        }),
      cancel: () => {
        if (waiter.settle) waiter.settle({ kind: 'timeout' });
        else done();
      },
    };
  }

  /** Safety net: looks up waiters older than one poll interval whose event may have been lost. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const cutoff = Date.now() - this.pollIntervalMs;
      // Only waiters whose job was added (wait() was called) and that have waited a full interval.
      const stale = [...this.waiters].filter((w) => w.waitingSince > 0 && w.waitingSince <= cutoff);
      await Promise.all(
        stale.map(async (w) => {
          const state = await w.queue.getJobState(w.jobId);
          if (state === 'completed' || state === 'failed') {
            const job = await w.queue.getJob(w.jobId);
            if (!job || !w.settle) return;
            this.onAnswer('poll');
            w.answered = true;
            w.settle(
              state === 'completed'
                ? completedEvent(job.returnvalue)
                : { kind: 'failed', failure: decodeFailure(job.failedReason) },
            );
          } else if (state === 'unknown' && w.settle) {
            this.onAnswer('poll');
            w.answered = true;
            w.settle({ kind: 'gone' });
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

/** A finished job's return value (an object, or JSON text from an event) as a wait outcome. */
export function completedEvent(returnvalue: unknown): Extract<WaitOutcome, { kind: 'completed' | 'failed' }> {
  let raw = returnvalue;
  if (typeof raw === 'string') {
    try {
      raw = JSON.parse(raw);
    } catch {
      raw = undefined;
    }
  }
  const parsed = InferenceResult.safeParse(raw);
  return parsed.success
    ? { kind: 'completed', result: parsed.data }
    : { kind: 'failed', failure: { code: 'internal_error', message: 'the worker returned a malformed result' } };
}
