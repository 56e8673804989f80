import {
  type InferenceResult,
  type JobErrorCode,
  jobView,
  type Logger,
  type ModelEntry,
  newId,
  RowMatrix,
} from '@quern/shared';
import type { JobService, JobView } from './job-service';
import type { Principal } from './principal';
import type { ResultWaiter } from './result-waiter';

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
      const member: Member = { request, row: -1, done: false, resolve, reject };
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
      // Each caller has its own wait; the job is followed for the longest of them, and no longer
      // than its deadline (timeout_ms, shared by the group) if it is still queued then.
      const untilExpired = Math.max(0, data.deadline_at - Date.now()) + 25;
      const timers = members.map((m) =>
        setTimeout(
          () => {
            if (m.done) return;
            void this.pendingView(jobId, first).then(
              (view) => settle(m, view ? pendingOrExpired(jobId, m.row, view) : gone(jobId)),
              (err: unknown) => {
                m.done = true;
                m.reject(err);
              },
            );
          },
          Math.min(m.request.waitMs, untilExpired),
        ),
      );
      // A lone caller that leaves takes its job with it if no batch has started it.
      if (members.length === 1) {
        first.signal.addEventListener(
          'abort',
          () => {
            void this.jobs
              .find(jobId, first.principal.id)
              .then((found) => (found ? this.jobs.cancel(found) : undefined))
              .catch((err: Error) =>
                this.logger.warn({ err: err.message, job_id: jobId }, 'cancel on disconnect failed'),
              );
          },
          { once: true },
        );
      }
      const outcome = await handle.wait(Math.min(Math.max(...members.map((m) => m.request.waitMs)), untilExpired));
      for (const t of timers) clearTimeout(t);
      for (const m of members) {
        if (outcome.kind === 'completed') settle(m, { kind: 'completed', jobId, row: m.row, result: outcome.result });
        else if (outcome.kind === 'failed')
          settle(m, { kind: 'failed', jobId, code: outcome.code, message: outcome.message });
        else if (outcome.kind === 'gone') settle(m, gone(jobId));
        else {
          const view = await this.pendingView(jobId, first);
          settle(m, view ? pendingOrExpired(jobId, m.row, view) : gone(jobId));
        }
      }
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

  private async pendingView(jobId: string, request: CoalescedRequest): Promise<JobView | undefined> {
    const found = await this.jobs.find(jobId, request.principal.id);
    return found ? jobView(await this.jobs.snapshot(found), request.model) : undefined;
  }
}

/** A job whose wait ran out goes on (202), unless it ran out because the job expired. */
function pendingOrExpired(jobId: string, row: number, view: JobView): CoalescedOutcome {
  return view.status === 'expired'
    ? { kind: 'failed', jobId, code: 'deadline_exceeded', message: 'the job was still queued at its deadline' }
    : { kind: 'pending', jobId, row, view };
}

function gone(jobId: string): CoalescedOutcome {
  return { kind: 'failed', jobId, code: 'gone', message: 'the job was removed before it finished' };
}
