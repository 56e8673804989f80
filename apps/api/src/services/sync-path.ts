import {
  type InferenceJobData,
  type InferenceResult,
  type JobFailure,
  type JobView,
  jobView,
  type Logger,
  type ModelEntry,
  newId,
  type OipJobFormat,
  RowMatrix,
  type Span,
  spanContextOf,
  type TraceContext,
  TurnBuffer,
} from '@quern/shared';
import { findClaimedJob, type IdempotencyClaim } from './idempotency';
import type { JobOutcome, JobService, SubmitArgs } from './job-service';
import type { Principal } from './principal';
import type { ResultWaiter, WaitHandle } from './result-waiter';

/** One synchronous call: `/v1/predict` (one row) or `/v1/batch-predict` (up to 100). */
export interface SyncCall {
  principal: Principal;
  model: ModelEntry;
  input: RowMatrix;
  mode: 'sync' | 'batch';
  priority: number | undefined;
  timeoutMs: number | undefined;
  /** Run deadline in ms from now (`Cancel-After`): the job must have finished by then. */
  runTimeoutMs?: number | undefined;
  requestId: string;
  /** How long the caller waits; 0 (`Prefer: respond-async`) answers `pending` once the job is queued. */
  waitMs: number;
  /** The client's connection: a caller that leaves is dropped, and its job with it if no one else waits. */
  signal: AbortSignal;
  /** Every row was looked up in the result cache just now (the worker need not look again). */
  cacheChecked: boolean;
  /** A call through the OIP (`/v2`): its job's output is shown as an OIP response; it shares jobs only with such calls. */
  oip?: OipJobFormat | undefined;
  /** The caller's request span and its context, when tracing is on. */
  trace?: { span: Span; context: TraceContext } | undefined;
  /**
   * The job's id decided by an Idempotency-Key (`claimJob`): a new id (the call gets a job of its
   * own and confirms the claim once the job is queued), or the id of an earlier call's job, which
   * this call follows instead of creating one.
   */
  claim?:
    | { replayed: false; jobId: string; confirm: () => Promise<void> }
    | { replayed: true; jobId: string; claim: Extract<IdempotencyClaim, { kind: 'replay' }> };
}

/**
 * What a sync call learns, the one type routes translate into HTTP. `row` is the index of the
 * call's first row in its job (calls may share a job: see `SyncPath`).
 */
export type SyncOutcome =
  | { kind: 'completed'; jobId: string; row: number; result: InferenceResult }
  /** The wait ran out (or the caller asked not to wait): the job goes on; 202 with its view. */
  | { kind: 'pending'; jobId: string; row: number; view: JobView }
  | { kind: 'failed'; jobId: string; failure: JobFailure }
  /** The job was removed (canceled while queued) before it finished. */
  | { kind: 'gone'; jobId: string };

export interface SyncPathOptions {
  /** Most rows one shared job carries. */
  maxRows: number;
  /**
   * Shared jobs of one group in flight before new calls gather (0: every call gets a job of its
   * own). Calls whose job is already settled (they fill it) go regardless.
   */
  maxInFlight: number;
  /** This API process's reply channel name, written into each job for the worker's reply. */
  replyTo: string;
}

interface Member {
  call: SyncCall;
  /** Index of the member's first row in its job; -1 until it is sent. */
  row: number;
  /** When this caller's wait ends. */
  waitUntil: number;
  done: boolean;
  /** The client went away. */
  left: boolean;
  /** Its wait ran out in a shared job: a job of its own is being added for it (`answerAlone`). */
  moving: boolean;
  /** It was given a job of its own: the shared job no longer concerns it. */
  moved: boolean;
  /** The job the member's rows went into, once sent. */
  job: SentJob | undefined;
  /** Sends the member's rows alone if its wait runs out while it still gathers. */
  gatherTimer: NodeJS.Timeout | undefined;
  resolve: (outcome: SyncOutcome) => void;
  reject: (err: unknown) => void;
}

/** A job some callers wait on. */
interface SentJob {
  id: string;
  members: Member[];
  /** The job is in the queue (a cancel can find it). */
  added: boolean;
  /** The wait on the job's outcome in progress; canceling it ends the wait (every caller left). */
  handle: WaitHandle;
  /** The job's deadlines (epoch ms), once added: a caller moved to a job of its own keeps them. */
  deadlineAt?: number;
  runDeadlineAt?: number | undefined;
}

interface Group {
  key: string;
  open: Member[];
  inFlight: number;
  /** Waiting in `dirty` for the next flush. */
  scheduled: boolean;
}

/** A caller waiting on its rows' outcome, from now until `waitMs` has passed. */
function newMember(
  call: SyncCall,
  row: number,
  resolve: (outcome: SyncOutcome) => void,
  reject: (err: unknown) => void,
  waitingSince = Date.now(),
): Member {
  return {
    call,
    row,
    waitUntil: waitingSince + call.waitMs,
    done: false,
    left: false,
    moving: false,
    moved: false,
    job: undefined,
    gatherTimer: undefined,
    resolve,
    reject,
  };
}

/** What a caller that went away is told (nobody hears it: its connection is gone). */
const CLIENT_LEFT: JobFailure = { code: 'canceled', message: 'the client went away' };

/** A little past the deadline, so that a job still queued then surely reads `expired`. */
const DEADLINE_MARGIN_MS = 25;

/**
 * The synchronous path, from validated rows to an outcome: it enqueues, waits and answers, for a
 * lone call and for calls that share a job alike (a single call is a group of one).
 *
 * Sync predictions of one principal, model, priority and deadline that arrive while that group
 * already has `maxInFlight` jobs running are gathered into one job with many rows, instead of a
 * job (and a dozen Redis commands) each. At idle nothing waits: a call whose group has room is
 * sent at once, in one `addBulk` with every other job sent in the same burst. Nor does a job
 * whose members can no longer change (its calls fill it, or the next call would not fit) wait
 * for room: waiting would not make it larger. With `max_batch_size` 1 every call is such a job.
 * Each job carries this process's reply channel: the worker pushes the answer there in the write
 * that stores its cache entries, and the `ResultWaiter` hands it over; QueueEvents and a state
 * poll answer a caller whose reply was lost. Each caller keeps its own wait (`Prefer`); a caller
 * that leaves is dropped, and a job whose callers all left is canceled if no batch has taken it.
 * Calls with an Idempotency-Key, and batch calls, get a job of their own; so does a caller that
 * does not wait.
 */
export class SyncPath {
  private readonly groups = new Map<string, Group>();
  private readonly dirty = new TurnBuffer<Group>((groups) => this.flush(groups), 'tick');
  private solo = 0;
  private waiting = 0;

  constructor(
    private readonly jobs: JobService,
    private readonly waiter: ResultWaiter,
    private readonly options: SyncPathOptions,
    private readonly logger: Logger,
    private readonly onJob: (model: string, mode: 'sync' | 'batch') => void,
  ) {}

  /** Sync callers waiting for an answer now (the fast lane's measure of load). */
  get callers(): number {
    return this.waiting;
  }

  run(call: SyncCall): Promise<SyncOutcome> {
    this.waiting++;
    const done = () => {
      this.waiting--;
    };
    const outcome = this.runCall(call);
    outcome.then(done, done);
    return outcome;
  }

  private runCall(call: SyncCall): Promise<SyncOutcome> {
    // A client that left before its call got here (during the rate-limit and cache round trip).
    if (call.signal.aborted) return Promise.resolve({ kind: 'failed', jobId: '', failure: CLIENT_LEFT });
    const claim = call.claim;
    if (claim?.replayed) return this.replay(call, claim);
    // A caller that does not wait (`respond-async`) is answered as soon as its job is queued: it
    // never waits in a group for a slot.
    const shared = !claim && call.mode === 'sync' && call.waitMs > 0 && this.options.maxInFlight > 0;
    const key = shared
      ? [
          call.principal.id,
          call.model.name,
          // A job runs one version: calls pinned to (or routed to) different versions never share one.
          call.model.version,
          this.jobs.priorityFor(call.principal, call.priority),
          call.timeoutMs ?? '',
          call.runTimeoutMs ?? '',
          call.oip ? 'oip' : '',
        ].join('|')
      : `solo:${++this.solo}`;
    let group = this.groups.get(key);
    if (!group) {
      group = { key, open: [], inFlight: 0, scheduled: false };
      this.groups.set(key, group);
    }
    const g = group;
    return new Promise<SyncOutcome>((resolve, reject) => {
      const member = newMember(call, -1, resolve, reject);
      g.open.push(member);
      call.signal.addEventListener('abort', () => this.leave(g, member), { once: true });
      if (shared) {
        // A caller whose wait runs out while its group's jobs are still in flight is not kept past
        // it: its rows go out then, in a job of their own, and it hears of that job (202).
        member.gatherTimer = setTimeout(() => {
          const at = g.open.indexOf(member);
          if (at < 0 || member.done) return;
          g.open.splice(at, 1);
          void this.send(g, [member]);
        }, call.waitMs);
        member.gatherTimer.unref();
      }
      this.schedule(g);
    });
  }

  /**
   * A caller went away: dropped if its rows were not sent yet; else, once every caller of its job
   * has left, the job is canceled (removed if no worker holds it; a worker drops it if its batch
   * has not started) and the wait on it ends.
   */
  private leave(group: Group, member: Member): void {
    member.left = true;
    clearTimeout(member.gatherTimer);
    const at = group.open.indexOf(member);
    if (at >= 0) group.open.splice(at, 1);
    this.settle(member, { kind: 'failed', jobId: member.job?.id ?? '', failure: CLIENT_LEFT });
    const job = member.job;
    if (job?.added && job.members.every((m) => m.left || m.moved)) this.abandon(job, member.call);
  }

  private abandon(job: SentJob, call: SyncCall): void {
    job.handle.cancel();
    this.cancelById(job.id, call);
  }

  /** Cancels a job no caller follows any more (removed if queued; a worker drops it if its batch has not started). */
  private cancelById(jobId: string, call: SyncCall): void {
    void this.jobs
      .find(jobId, call.principal.id)
      .then((found) => (found ? this.jobs.cancel(found) : undefined))
      .catch((err: Error) =>
        this.logger.warn({ err: err.message, job_id: jobId }, 'cancel of an unfollowed job failed'),
      );
  }

  private settle(member: Member, outcome: SyncOutcome): void {
    if (member.done) return;
    member.done = true;
    member.resolve(outcome);
  }

  /**
   * Sends what has gathered once every continuation already queued has run: calls whose cache
   * reads came back in one Redis reply resume together and join one job, and a lone call waits
   * for no other turn of the event loop.
   */
  private schedule(group: Group): void {
    if (group.scheduled) return;
    group.scheduled = true;
    this.dirty.push(group);
  }

  private flush(groups: Group[]): void {
    for (const g of groups) {
      g.scheduled = false;
      // Calls gather while the group's jobs are in flight, but a job whose members can no longer
      // change goes at once: waiting cannot make it larger (with `max_batch_size` 1, every call).
      while (g.open.length > 0 && (g.inFlight < this.options.maxInFlight || g.inFlight === 0 || this.fills(g))) {
        void this.send(g, this.take(g));
      }
      if (g.open.length === 0 && g.inFlight === 0) this.forget(g);
    }
    // Every job of this burst goes out as one addBulk now, not a turn later.
    this.jobs.flushAdds();
  }

  /** Rows one job of the group carries at most (the model's batch, capped by `maxRows`). */
  private rowLimit(group: Group): number {
    const first = group.open[0] as Member;
    return Math.min(this.options.maxRows, first.call.model.batching.max_batch_size);
  }

  /** A group done with: removed from the map unless a newer group has its key by now. */
  private forget(group: Group): void {
    if (this.groups.get(group.key) === group) this.groups.delete(group.key);
  }

  /**
   * The next job's members can no longer change: the gathered rows reach the job's limit (`take`
   * then stops at the last call that fits).
   */
  private fills(group: Group): boolean {
    const limit = this.rowLimit(group);
    let rows = 0;
    for (const m of group.open) {
      rows += m.call.input.count;
      if (rows >= limit) return true;
    }
    return false;
  }

  /** The members of the next job: as many calls as fit in one batch of the model (at least one). */
  private take(group: Group): Member[] {
    const limit = this.rowLimit(group);
    const members: Member[] = [];
    let rows = 0;
    while (group.open.length > 0) {
      const next = group.open[0] as Member;
      if (members.length > 0 && rows + next.call.input.count > limit) break;
      group.open.shift();
      clearTimeout(next.gatherTimer);
      members.push(next);
      rows += next.call.input.count;
    }
    return members;
  }

  private async send(group: Group, members: Member[]): Promise<void> {
    group.inFlight++;
    const first = (members[0] as Member).call;
    const claim = first.claim?.replayed === false ? first.claim : undefined;
    const jobId = claim?.jobId ?? newId('job');
    const job: SentJob = { id: jobId, members, added: false, handle: this.waiter.register(jobId, first.model.name) };
    let at = 0;
    for (const m of members) {
      m.row = at;
      m.job = job;
      at += m.call.input.count;
    }
    try {
      const input = members.length === 1 ? first.input : RowMatrix.concat(members.map((m) => m.call.input));
      // A failed add does not release an idempotency claim: a timeout does not say the job was not
      // added. The claim expires in 60 s, and a retry takes it over (same job id) 2 s after it was made.
      const { data } = await this.jobs.submit({
        model: first.model,
        input,
        mode: first.mode,
        principal: first.principal,
        requestId: first.requestId,
        jobId,
        timeoutMs: first.timeoutMs,
        runTimeoutMs: first.runTimeoutMs,
        priority: first.priority,
        cacheChecked: members.every((m) => m.call.cacheChecked),
        replyTo: this.options.replyTo,
        oip: first.oip,
        traceParent: first.trace?.context,
      });
      job.deadlineAt = data.deadline_at;
      job.runDeadlineAt = data.run_deadline_at;
      if (data.trace) linkCallers(members, jobId, data.trace);
      this.onJob(first.model.name, first.mode);
      await claim
        ?.confirm()
        .catch((err: Error) =>
          this.logger.warn({ err: err.message, job_id: jobId }, 'idempotency record not confirmed'),
        );
      // Callers that asked not to wait hear of the job as queued, whatever happens to it next.
      for (const m of members) {
        if (m.call.waitMs > 0) continue;
        const view = jobView({ id: jobId, data, state: 'waiting', timestamp: data.created_at }, first.model);
        this.settle(m, { kind: 'pending', jobId, row: m.row, view });
      }
      job.added = true;
      // Callers that left while the job was being added: cancel it now if they all did.
      if (members.every((m) => m.left)) this.abandon(job, first);
      await this.follow(group, job, data.deadline_at);
    } catch (err) {
      job.handle.cancel();
      for (const m of members) {
        if (!m.done) {
          m.done = true;
          m.reject(err);
        }
      }
    } finally {
      group.inFlight--;
      if (group.open.length > 0) this.schedule(group);
      else if (group.inFlight === 0) this.forget(group);
    }
  }

  /** An earlier call with the same Idempotency-Key made the job: follow that one. */
  private async replay(
    call: SyncCall,
    claim: Extract<NonNullable<SyncCall['claim']>, { replayed: true }>,
  ): Promise<SyncOutcome> {
    const { jobId } = claim;
    const owner = call.principal.id;
    // The caller's wait counts from now: looking for the first request's job (up to seconds while
    // that request is still on its way) is part of it.
    const waitingSince = Date.now();
    const handle = this.waiter.register(jobId, call.model.name);
    try {
      const found = await findClaimedJob(this.jobs, owner, claim.claim, () =>
        this.jobs.submit({ ...jobOf(call, jobId), replyTo: this.options.replyTo }),
      );
      const now = this.jobs.outcomeOf(await this.jobs.snapshot(found), call.model);
      if (now.kind !== 'pending' || call.waitMs <= 0 || Date.now() >= waitingSince + call.waitMs) {
        handle.cancel();
        return call.waitMs <= 0 && now.kind !== 'pending'
          ? { kind: 'pending', jobId, row: 0, view: await this.jobs.view(found) }
          : toSyncOutcome(jobId, 0, now);
      }
      // A replayed call never cancels the job: the first caller (or the key's owner) owns it.
      return await new Promise<SyncOutcome>((resolve, reject) => {
        const member = newMember(call, 0, resolve, reject, waitingSince);
        const job: SentJob = { id: jobId, members: [member], added: true, handle };
        if (call.signal.aborted) {
          handle.cancel();
          resolve({ kind: 'failed', jobId, failure: CLIENT_LEFT });
          return;
        }
        call.signal.addEventListener(
          'abort',
          () => {
            member.left = true;
            job.handle.cancel();
            this.settle(member, { kind: 'failed', jobId, failure: CLIENT_LEFT });
          },
          { once: true },
        );
        this.follow(undefined, job, found.data.deadline_at).catch(reject);
      });
    } catch (err) {
      handle.cancel();
      throw err;
    }
  }

  /**
   * Follows one job for its callers. `timeout_ms` bounds only the time a job spends queued, so
   * at the deadline the job is read: still queued means expired (its callers hear so at once);
   * a job a worker holds may still finish, so the wait goes on. Each caller whose own wait ends
   * first gets the job as it is then; when the longest wait runs out (or the process drains),
   * the rest do. A job that failed on one caller's row (its input overflows the model) fails
   * that caller only: the others' rows are sent again.
   */
  private async follow(group: Group | undefined, job: SentJob, deadlineAt: number): Promise<void> {
    const { id: jobId, members } = job;
    const { model, principal } = (members[0] as Member).call;
    const owner = principal.id;
    const waiting = () => members.filter((m) => !m.done && !m.moving);
    const timers = members.map((m) =>
      setTimeout(
        () => {
          if (m.done) return;
          void this.jobs.currentOutcome(jobId, owner, model).then(
            (now) =>
              now.kind === 'pending' && members.length > 1
                ? this.answerAlone(m, job, toSyncOutcome(jobId, m.row, now))
                : this.settle(m, toSyncOutcome(jobId, m.row, now)),
            (err: unknown) => {
              if (m.done) return;
              m.done = true;
              m.reject(err);
            },
          );
        },
        Math.max(0, m.waitUntil - Date.now()),
      ),
    );
    let untilDeadline = Math.max(0, deadlineAt - Date.now()) + DEADLINE_MARGIN_MS;
    let outcome: JobOutcome | undefined;
    try {
      for (;;) {
        const open = waiting();
        if (open.length === 0) {
          job.handle.cancel();
          return;
        }
        const endAt = Math.max(...open.map((m) => m.waitUntil));
        // Wake when the last wait ends or the deadline comes, and whenever a caller leaves.
        const result = await job.handle.wait(Math.min(Math.max(0, endAt - Date.now()), untilDeadline));
        if (result.kind !== 'timeout') {
          outcome = result;
          break;
        }
        untilDeadline = Number.POSITIVE_INFINITY;
        if (waiting().length === 0) return;
        if (this.waiter.draining || Date.now() >= endAt) {
          outcome = await this.jobs.currentOutcome(jobId, owner, model);
          break;
        }
        // The deadline passed with time left to wait: register again before reading, so that
        // an event between the read and the wait is not missed.
        job.handle = this.waiter.register(jobId, model.name);
        const now = await this.jobs.currentOutcome(jobId, owner, model);
        if (now.kind !== 'pending' || now.view.status !== 'running') {
          job.handle.cancel();
          outcome = now;
          break;
        }
      }
    } finally {
      for (const t of timers) clearTimeout(t);
    }
    const overflow = outcome.kind === 'failed' ? outcome.failure.row : undefined;
    if (overflow !== undefined && members.length > 1 && group) {
      const bad = members.find((m) => overflow >= m.row && overflow < m.row + m.call.input.count);
      if (bad) {
        this.settle(bad, {
          kind: 'failed',
          jobId,
          failure: {
            code: 'invalid_input',
            message:
              "the model's output for this input is not a finite number: it is outside what the model can compute",
          },
        });
      }
      const again = members.filter((m) => !m.done && !m.left);
      for (const m of again) m.job = undefined;
      group.open.unshift(...again);
      return;
    }
    if (outcome.kind === 'pending' && members.length > 1) {
      // Every wait ran out with the shared job still pending: each caller gets a job of its own
      // (answerAlone, which cancels the shared one once no caller refers to it).
      const open = members.filter((m) => !m.done && !m.moving);
      await Promise.all(open.map((m) => this.answerAlone(m, job, toSyncOutcome(jobId, m.row, outcome))));
      return;
    }
    for (const m of members) this.settle(m, toSyncOutcome(jobId, m.row, outcome));
  }

  /**
   * A caller whose wait ran out while its rows are in a job shared with other callers is answered
   * (202) with a job of its own: the shared job can still fail on another caller's row (a row
   * the model cannot compute fails the whole job), and the job a caller polls must end as its own
   * rows do. The new job keeps the shared job's deadlines, and the shared job is canceled once no
   * caller refers to it, so rows are computed twice only when the shared job had started. The
   * caller hears of the shared job instead (`sharedOutcome`) when its deadline has passed, when
   * its own job cannot be added (a full queue), or when this process is draining (it adds nothing
   * then). Called once per caller: `moving` guards the timer and the end of `follow` racing.
   */
  private async answerAlone(m: Member, shared: SentJob, sharedOutcome: SyncOutcome): Promise<void> {
    if (m.done || m.moving) return;
    // A process that is shutting down answers with the shared job, which goes on: it adds nothing.
    if (this.waiter.draining) return this.settle(m, sharedOutcome);
    const { call } = m;
    // The caller's own deadlines, not new ones from now (`Cancel-After`: finished by then).
    const now = Date.now();
    const timeoutMs = (shared.deadlineAt ?? now) - now;
    const runTimeoutMs = shared.runDeadlineAt === undefined ? undefined : shared.runDeadlineAt - now;
    if (timeoutMs <= 0 || (runTimeoutMs !== undefined && runTimeoutMs <= 0)) return this.settle(m, sharedOutcome);
    m.moving = true;
    const jobId = newId('job');
    try {
      const { data } = await this.jobs.submit({
        ...jobOf(call, jobId),
        timeoutMs,
        runTimeoutMs,
        cacheChecked: call.cacheChecked,
      });
      this.onJob(call.model.name, call.mode);
      if (m.done) {
        // The shared job ended while this one was being added, and its caller heard that outcome.
        this.cancelById(jobId, call);
      } else {
        m.moved = true;
        const view = jobView({ id: jobId, data, state: 'waiting', timestamp: data.created_at }, call.model);
        this.settle(m, { kind: 'pending', jobId, row: 0, view });
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'own job for a caller of a shared job not added');
      this.settle(m, sharedOutcome);
    } finally {
      m.moving = false;
      // Nobody follows the shared job any more: cancel it rather than compute it for no one.
      if (shared.added && shared.members.every((x) => x.moved || x.left)) this.abandon(shared, call);
    }
  }
}

/**
 * Tracing on: each caller's request span names the job its rows went into, and the callers that
 * joined another caller's job (whose trace holds the enqueue) link to that job's enqueue span, so
 * every caller keeps its own trace and still finds the shared job.
 */
function linkCallers(members: Member[], jobId: string, carrier: NonNullable<InferenceJobData['trace']>): void {
  const target = spanContextOf(carrier);
  members.forEach((m, i) => {
    const span = m.call.trace?.span;
    if (!span) return;
    span.setAttributes({ 'quern.job_id': jobId, 'quern.job_row': m.row, 'quern.coalesced': members.length > 1 });
    if (i > 0 && target) span.addLink({ context: target, attributes: { 'quern.job_id': jobId } });
  });
}

/** The job of one call alone, under `jobId` (a replayed or a moved caller's). */
function jobOf(call: SyncCall, jobId: string): SubmitArgs {
  return {
    model: call.model,
    input: call.input,
    mode: call.mode,
    principal: call.principal,
    requestId: call.requestId,
    jobId,
    timeoutMs: call.timeoutMs,
    runTimeoutMs: call.runTimeoutMs,
    priority: call.priority,
    oip: call.oip,
    traceParent: call.trace?.context,
  };
}

/** A job's state as a sync caller hears it, at `row`. */
function toSyncOutcome(jobId: string, row: number, outcome: JobOutcome): SyncOutcome {
  switch (outcome.kind) {
    case 'completed':
      return { kind: 'completed', jobId, row, result: outcome.result };
    case 'failed':
      return { kind: 'failed', jobId, failure: outcome.failure };
    case 'gone':
      return { kind: 'gone', jobId };
    case 'pending':
      return { kind: 'pending', jobId, row, view: outcome.view };
  }
}
