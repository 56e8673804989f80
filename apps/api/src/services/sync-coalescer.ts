import {
  type InferenceResult,
  type JobErrorCode,
  type Logger,
  type ModelEntry,
  newId,
  overflowRowOf,
  RowMatrix,
} from '@quern/shared';
import type { JobService, JobView } from './job-service';
import type { Principal } from './principal';
import type { ResultWaiter } from './result-waiter';
import { currentOutcome, type FollowOutcome, followJob } from './sync-follow';

export type CoalescedOutcome =
  | { kind: 'completed'; jobId: string; row: number; result: InferenceResult }
  | { kind: 'failed'; jobId: string; code: JobErrorCode | 'gone'; message: string }
  /** This caller's wait ran out: the job goes on; the caller answers 202 with it. */
  | { kind: 'pending'; jobId: string; row: number; view: JobView };

export interface CoalescedRequest {
  principal: Principal;
  model: ModelEntry;
  row: number[];
  priority: number | undefined;
  timeoutMs: number | undefined;
  requestId: string;
  waitMs: number;
  signal: AbortSignal;
}

interface Member {
  request: CoalescedRequest;
  row: number;
  /** When this caller's wait ends (it keeps running if its row is sent again). */
  waitUntil: number;
  done: boolean;
  resolve: (outcome: CoalescedOutcome) => void;
  reject: (err: unknown) => void;
}

interface Group {
  open: Member[];
  inFlight: number;
  flushScheduled: boolean;
}

export interface CoalescerOptions {
  /** Most rows one coalesced job carries. */
  maxRows: number;
  /** Jobs of one group that may run at once; more requests gather meanwhile. */
  maxInFlight: number;
}

/**
 * Sync predictions of one principal, model, priority and deadline that arrive while that group
 * already has jobs running are gathered into one job with many rows, instead of one job (and a
 * dozen Redis commands) each. At idle nothing waits: a request whose group has room is sent in
 * the same event-loop turn. Under load, rows gather while jobs run, so jobs grow with load, as
 * the worker's batches do. Each caller still gets its own row's answer; `job_row` tells which row
 * of the shared job was its own.
 */
export class SyncCoalescer {
  private readonly groups = new Map<string, Group>();

  constructor(
    private readonly jobs: JobService,
    private readonly waiter: ResultWaiter,
    private readonly options: CoalescerOptions,
    private readonly logger: Logger,
    private readonly onJob: (model: string, rows: number) => void,
  ) {}

  submit(request: CoalescedRequest): Promise<CoalescedOutcome> {
    const key = [
      request.principal.id,
      request.model.name,
      this.jobs.priorityFor(request.principal, request.priority),
      request.timeoutMs ?? '',
    ].join('|');
    let group = this.groups.get(key);
    if (!group) {
      group = { open: [], inFlight: 0, flushScheduled: false };
      this.groups.set(key, group);
    }
    const g = group;
    return new Promise<CoalescedOutcome>((resolve, reject) => {
      const member: Member = { request, row: -1, waitUntil: Date.now() + request.waitMs, done: false, resolve, reject };
      g.open.push(member);
      // A caller that leaves before its row is sent is just dropped from the group.
      request.signal.addEventListener(
        'abort',
        () => {
          const at = g.open.indexOf(member);
          if (at >= 0) {
            g.open.splice(at, 1);
            member.done = true;
            reject(new Error('client went away'));
          }
        },
        { once: true },
      );
      this.schedule(key, g);
    });
  }

  /** Sends what has gathered, after the other requests parsed in this turn have joined. */
  private schedule(key: string, group: Group): void {
    if (group.flushScheduled || group.inFlight >= this.options.maxInFlight) return;
    group.flushScheduled = true;
    setImmediate(() => {
      group.flushScheduled = false;
      while (group.open.length > 0 && group.inFlight < this.options.maxInFlight) {
        // A job never holds more rows than one batch of its model takes.
        const rows = Math.min(this.options.maxRows, group.open[0]?.request.model.batching.max_batch_size ?? 1);
        void this.flush(key, group, group.open.splice(0, rows));
      }
      if (group.open.length === 0 && group.inFlight === 0) this.groups.delete(key);
    });
  }

  private async flush(key: string, group: Group, members: Member[]): Promise<void> {
    group.inFlight++;
    const first = members[0]?.request as CoalescedRequest;
    const jobId = newId('job');
    members.forEach((m, i) => {
      m.row = i;
    });
    const handle = this.waiter.register(jobId, first.model.name);
    const settle = (m: Member, outcome: CoalescedOutcome) => {
      if (m.done) return;
      m.done = true;
      m.resolve(outcome);
    };
    try {
      const { data } = await this.jobs.submit({
        model: first.model,
        input: RowMatrix.fromRows(members.map((m) => m.request.row)),
        mode: 'sync',
        principal: first.principal,
        requestId: first.requestId,
        jobId,
        timeoutMs: first.timeoutMs,
        priority: first.priority,
        cacheChecked: true,
      });
      this.onJob(first.model.name, members.length);
      const owner = first.principal.id;
      // Each caller has its own wait: one whose wait ends before the job's gets what the job is
      // then (202 while it runs or waits).
      const timers = members.map((m) =>
        setTimeout(
          () => {
            if (m.done) return;
            void currentOutcome(this.jobs, jobId, owner, first.model).then(
              (now) => settle(m, memberOutcome(jobId, m.row, now)),
              (err: unknown) => {
                m.done = true;
                m.reject(err);
              },
            );
          },
          Math.max(0, m.waitUntil - Date.now()),
        ),
      );
      // A lone caller that leaves takes its job with it if no batch has started it.
      if (members.length === 1) {
        first.signal.addEventListener(
          'abort',
          () => {
            void this.jobs
              .find(jobId, owner)
              .then((found) => (found ? this.jobs.cancel(found) : undefined))
              .catch((err: Error) =>
                this.logger.warn({ err: err.message, job_id: jobId }, 'cancel on disconnect failed'),
              );
          },
          { once: true },
        );
      }
      // The job is followed for the longest wait of its callers (and answers at its deadline if
      // still queued then: the group shares one deadline).
      const outcome = await followJob({
        waiter: this.waiter,
        jobs: this.jobs,
        handle,
        jobId,
        owner,
        model: first.model,
        waitMs: Math.max(...members.map((m) => m.waitUntil)) - Date.now(),
        deadlineAt: data.deadline_at,
        stop: () => this.waiter.draining,
      });
      for (const t of timers) clearTimeout(t);
      const overflow = outcome.kind === 'failed' ? overflowRowOf(outcome.code, outcome.message) : undefined;
      if (overflow !== undefined) {
        // One caller's input overflowed the model: that caller hears so; the others' rows are
        // sent again (their waits keep running).
        const bad = members.find((m) => m.row === overflow);
        if (bad) settle(bad, { kind: 'failed', jobId, code: 'invalid_input', message: OVERFLOW_MESSAGE });
        const again = members.filter((m) => !m.done && !m.request.signal.aborted);
        group.open.unshift(...again);
        return;
      }
      for (const m of members) settle(m, memberOutcome(jobId, m.row, outcome));
    } catch (err) {
      handle.cancel();
      for (const m of members) {
        if (!m.done) {
          m.done = true;
          m.reject(err);
        }
      }
    } finally {
      group.inFlight--;
      this.schedule(key, group);
    }
  }
}

const OVERFLOW_MESSAGE =
  "the model's output for this input is not a finite number: it is outside what the model can compute";

/** One caller's answer from its shared job's outcome. */
function memberOutcome(jobId: string, row: number, outcome: FollowOutcome): CoalescedOutcome {
  switch (outcome.kind) {
    case 'completed':
      return { kind: 'completed', jobId, row, result: outcome.result };
    case 'failed':
      return { kind: 'failed', jobId, code: outcome.code, message: outcome.message };
    case 'gone':
      return gone(jobId);
    case 'pending':
      return { kind: 'pending', jobId, row, view: outcome.view };
  }
}

function gone(jobId: string): CoalescedOutcome {
  return { kind: 'failed', jobId, code: 'gone', message: 'the job was removed before it finished' };
}
