import {
  AdmissionLedger,
  type ApiConfig,
  type CanceledRecord,
  carrierOf,
  decodeCanceledRecord,
  decodeFailure,
  encodeFailure,
  failSpan,
  INFERENCE_JOB_NAME,
  InferenceJobData,
  inferenceJobOptions,
  isId,
  type JobReply,
  type JobSnapshot,
  type JobView,
  jobMatrix,
  jobView,
  type KeySpace,
  type Logger,
  type ModelEntry,
  type ModelQueues,
  newId,
  type OipJobFormat,
  QuernError,
  type QueueStanding,
  type RedisClient,
  ROOT_TRACE_CONTEXT,
  type RowMatrix,
  readDeliveryStates,
  requestCancel,
  SpanKind,
  type SubmitMode,
  type TraceContext,
  type Tracer,
  trace,
  type WebhookDispatcher,
  type WebhookSpec,
  writeCanceledRecord,
} from '@quern/shared';
import type { Job, JobState, Queue } from 'bullmq';
import { BulkAdder } from './bulk-adder';
import type { FastLane, FastLanePush } from './fast-lane';
import type { ModelRegistry } from './model-registry';
import type { Principal } from './principal';
import { completedEvent, type WaitOutcome } from './result-waiter';

export type { JobView } from '@quern/shared';

/** A job found for its owner: in its queue, or only the record left of it after a cancel. */
export type FoundJob =
  | { kind: 'job'; id: string; job: Job; data: InferenceJobData; model: ModelEntry; queue: Queue }
  | { kind: 'canceled'; id: string; record: CanceledRecord; data: InferenceJobData; model: ModelEntry };

export interface SubmitArgs {
  model: ModelEntry;
  /** The input rows, checked against the model. */
  input: RowMatrix;
  mode: SubmitMode;
  principal: Principal;
  requestId: string;
  /** Lets the caller register a waiter (or an idempotency record) before the job exists. */
  jobId?: string;
  timeoutMs?: number | undefined;
  /** Requested BullMQ priority (1 highest); never above the tier's. */
  priority?: number | undefined;
  webhook?: WebhookSpec | undefined;
  /** The caller looked every row up in the result cache just now: the worker need not. */
  cacheChecked?: boolean | undefined;
  /** The API process waiting for the answer: the worker pushes it to that process's reply channel. */
  replyTo?: string | undefined;
  /** Created through the OIP (`/v2`): the job's output is shown as an OIP response. */
  oip?: OipJobFormat | undefined;
  /** A client's retry of the job with this id: its number (2 for the first retry). */
  attempt?: number | undefined;
  /** Run deadline in ms from now (`Cancel-After`): the job must have finished by then, not only started. */
  runTimeoutMs?: number | undefined;
  /** The request's trace context (tracing on): the job's enqueue span is its child; a trace of its own when absent. */
  traceParent?: TraceContext | undefined;
  /**
   * Runs once the job is admitted, before its add (a client's retry removes the old run here, so
   * a refused retry leaves it as it was); a throw gives the admission back and is the answer.
   */
  beforeAdd?: (() => Promise<void>) | undefined;
}

/** A job's state as a waiting caller hears it: an outcome, or `pending` with the job's view. */
export type JobOutcome = Exclude<WaitOutcome, { kind: 'timeout' }> | { kind: 'pending'; view: JobView };

export interface JobServiceDeps {
  /** The queues of each model (one per partition), by model name. */
  queues: ReadonlyMap<string, ModelQueues>;
  models: ModelRegistry;
  config: ApiConfig;
  redis: RedisClient;
  keys: KeySpace;
  /** Recent completions per second of a model's queue (a full queue's Retry-After). */
  drainRate: (model: string) => number;
  webhooks: WebhookDispatcher;
  logger: Logger;
  /**
   * A worker's reply this process heard for a job a moment ago. The reply is published before
   * BullMQ records the job as finished: a job read in between shows the reply's outcome, so a
   * caller that got its 200 and reads the job from this process sees it finished.
   */
  recentReply?: (jobId: string) => JobReply | undefined;
  /** Set when tracing is on: each job gets an enqueue span, and carries its context to the worker. */
  tracer?: Tracer | undefined;
  /** Set when QUERN_SYNC_FAST_LANE is on: small sync jobs are also pushed to an idle worker. */
  fastLane?: FastLane | undefined;
}

/**
 * Rows per step of fair-share virtual time: a quarter of the model's largest batch. Each key has
 * at most this many rows (one job more) at each priority level, so a newcomer's job waits behind
 * about one batch of each busy key; coarser steps leave more room before a rebase.
 */
export function fairQuantumRows(model: ModelEntry): number {
  return Math.max(1, Math.round(model.batching.max_batch_size / 4));
}

export type CancelOutcome =
  | { kind: 'canceled'; view: JobView }
  | { kind: 'requested'; view: JobView }
  | { kind: 'finished'; view: JobView };

/**
 * A partition's share of a model's queue-depth cap: the cap divided exactly (the first `cap mod n`
 * partitions hold one more), so that the shares add up to the cap and concurrent submissions
 * cannot pass it together; at least one each (a cap below the partitions admits one per partition).
 */
export function partitionDepthCap(cap: number, partitions: number, partition: number): number {
  const share = Math.floor(cap / partitions) + (partition < cap % partitions ? 1 : 0);
  return Math.max(1, share);
}

/**
 * Creates inference jobs and reads them back as job resources. Job ids are random (`job_…`),
 * never BullMQ's counter, and every read checks the owner: another principal's job is
 * reported exactly like a job that does not exist.
 */
export class JobService {
  private readonly depthCache = new Map<string, { depth: number; at: number }>();
  private readonly adders = new Map<string, BulkAdder>();
  private readonly ledger: AdmissionLedger;

  private readonly queues: ReadonlyMap<string, ModelQueues>;
  private readonly models: ModelRegistry;
  private readonly config: ApiConfig;
  private readonly redis: RedisClient;
  private readonly keys: KeySpace;
  private readonly drainRate: (model: string) => number;
  private readonly webhooks: WebhookDispatcher;
  private readonly logger: Logger;
  private readonly recentReply: (jobId: string) => JobReply | undefined;
  private readonly tracer: Tracer | undefined;
  private readonly fastLane: FastLane | undefined;

  constructor(deps: JobServiceDeps) {
    this.queues = deps.queues;
    this.models = deps.models;
    this.config = deps.config;
    this.redis = deps.redis;
    this.keys = deps.keys;
    this.drainRate = deps.drainRate;
    this.webhooks = deps.webhooks;
    this.logger = deps.logger;
    this.recentReply = deps.recentReply ?? (() => undefined);
    this.ledger = new AdmissionLedger(this.redis, this.keys, (err) =>
      this.logger.warn({ err: err.message }, 'rows of finished jobs not released'),
    );
    this.tracer = deps.tracer;
    this.fastLane = deps.fastLane;
  }

  /** The queues of a model, one per partition. */
  queuesOf(model: string): ModelQueues {
    const queues = this.queues.get(model);
    if (!queues) throw new Error(`no queue for model ${model}`);
    return queues;
  }

  /** A model's first (with one partition: its only) queue; a job's own is `queuesOf(model).forJob(id)`. */
  queueOf(model: string): Queue {
    return this.queuesOf(model).partitions[0] as Queue;
  }

  /** A key's fair-share weight: its own, else its tier's (QUERN_FAIR_WEIGHT_FREE / _PREMIUM). */
  weightOf(principal: Principal): number {
    if (principal.weight !== undefined) return principal.weight;
    return principal.tier === 'premium' ? this.config.QUERN_FAIR_WEIGHT_PREMIUM : this.config.QUERN_FAIR_WEIGHT_FREE;
  }

  /** The priority a job gets: the tier's, or a lower one (a larger number) if the caller asks. */
  priorityFor(principal: Principal, requested: number | undefined): number {
    const floor = principal.tier === 'premium' ? this.config.QUERN_PRIORITY_PREMIUM : this.config.QUERN_PRIORITY_FREE;
    return Math.max(floor, requested ?? floor);
  }

  /**
   * Backpressure: refuses (503 with Retry-After from the recent drain rate) when the model's queue
   * holds more than QUERN_QUEUE_MAX_DEPTH waiting jobs. Nothing is enqueued then.
   */
  async admit(model: ModelEntry): Promise<void> {
    const now = Date.now();
    let cached = this.depthCache.get(model.name);
    if (!cached || now - cached.at >= this.config.QUERN_QUEUE_DEPTH_CACHE_MS) {
      const counts = await this.queuesOf(model.name).getJobCounts('waiting', 'prioritized');
      cached = { depth: (counts.waiting ?? 0) + (counts.prioritized ?? 0), at: now };
      this.depthCache.set(model.name, cached);
    }
    const cap = this.config.QUERN_QUEUE_MAX_DEPTH;
    if (cached.depth < cap) return;
    const rate = this.drainRate(model.name);
    // Time for the backlog above 90% of the cap to drain at the recent rate.
    const retryAfter = rate > 0 ? Math.ceil((cached.depth - cap * 0.9) / rate) : 30;
    throw new QuernError('queue_full', `the ${model.name} queue is full (${cached.depth} jobs waiting); retry later`, {
      headers: { 'retry-after': String(Math.min(300, Math.max(1, retryAfter))) },
    });
  }

  async submit(args: SubmitArgs): Promise<{ id: string; data: InferenceJobData }> {
    const id = args.jobId ?? newId('job');
    const weight = this.weightOf(args.principal);
    const now = Date.now();
    const timeout = Math.min(
      args.timeoutMs ?? this.config.QUERN_JOB_TIMEOUT_DEFAULT_MS,
      this.config.QUERN_JOB_TIMEOUT_MAX_MS,
    );
    const priorityClass = this.priorityFor(args.principal, args.priority);
    const model = args.model.name;
    const owner = args.principal.id;
    // The job's partition (a coalesced job is one job: it stays whole).
    const queues = this.queuesOf(model);
    const partition = queues.partitionOf(id);
    const queue = queues.partitions[partition] as Queue;
    const data: InferenceJobData = {
      v: 1,
      model: args.model.name,
      model_version: args.model.version,
      ...(this.config.QUERN_JOB_INPUT_FORMAT === 'json'
        ? { rows: args.input.rows().map((row) => Array.from(row)) }
        : { input: { count: args.input.count, width: args.input.width, f32: args.input.toBase64() } }),
      mode: args.mode,
      owner: args.principal.id,
      request_id: args.requestId,
      created_at: now,
      deadline_at: args.runTimeoutMs !== undefined ? now + Math.min(timeout, args.runTimeoutMs) : now + timeout,
      ...(args.runTimeoutMs !== undefined ? { run_deadline_at: now + args.runTimeoutMs } : {}),
      priority: priorityClass,
      ...(weight !== 1 ? { weight } : {}),
      ...(args.webhook ? { webhook: args.webhook } : {}),
      ...(args.cacheChecked ? { cache_checked: true } : {}),
      ...(args.replyTo ? { reply_to: args.replyTo } : {}),
      ...(args.oip ? { oip: args.oip } : {}),
      ...(args.attempt ? { attempt: args.attempt } : {}),
    };
    // A sync job a worker may answer before BullMQ hands it over (docs/architecture.md): the
    // admission script pushes it once admitted, so the worker computes while the add goes on. Not
    // with tracing on: a traced job's spans come from its BullMQ run.
    const push =
      args.replyTo && args.cacheChecked && this.fastLane && !this.tracer
        ? this.fastLane.pushFor(id, data, args.input.count, args.input.count * args.input.width)
        : undefined;
    if (push) data.fast_lane = push.worker;
    // Both caps, checked and counted atomically before anything is written; the fair-share priority.
    const queuePriority = await this.admitOrRefuse(
      args,
      id,
      { queues, partition, queue },
      priorityClass,
      now + timeout,
      push,
    );
    if (args.beforeAdd) {
      try {
        await args.beforeAdd();
      } catch (err) {
        this.ledger.notAdded(model, owner, id, partition);
        throw err;
      }
    }
    // Tracing on: the enqueue span (a child of the request's), whose context the job carries.
    const enqueue = this.tracer?.startSpan(
      `enqueue ${args.model.name}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: { 'quern.job_id': id, 'quern.model': args.model.name, 'quern.rows': args.input.count },
      },
      args.traceParent ?? ROOT_TRACE_CONTEXT,
    );
    const carrier = enqueue && carrierOf(trace.setSpan(ROOT_TRACE_CONTEXT, enqueue));
    if (carrier) data.trace = carrier;
    // One adder per queue.
    let adder = this.adders.get(queue.name);
    if (!adder) {
      adder = new BulkAdder(queue);
      this.adders.set(queue.name, adder);
    }
    const added = adder.add(INFERENCE_JOB_NAME, data, {
      jobId: id,
      // The job's own timestamp is the created_at the 202 showed, not a later Date.now() in BullMQ.
      timestamp: now,
      priority: queuePriority,
      ...inferenceJobOptions(this.config),
    });
    // The add returned: the job no longer counts as an admission in flight (BullMQ counts it
    // while it waits); an add that failed gives its admission and rows back.
    added.then(
      () => this.ledger.added(model, id, partition),
      () => this.ledger.notAdded(model, owner, id, partition),
    );
    if (enqueue) {
      await added.then(
        () => enqueue.end(),
        (err: unknown) => {
          failSpan(enqueue, err);
          enqueue.end();
        },
      );
    }
    await added;
    return { id, data };
  }

  /**
   * A client's retry of a job that ended `failed`, `expired` or `canceled`: a new run under the same
   * id, with the same rows, webhook and deadline length, through the same admission (caps, fair
   * share), and a new webhook cycle. Anything else is a 409.
   */
  async retry(found: FoundJob, principal: Principal, requestId: string): Promise<JobView> {
    const before = await this.view(found);
    if (before.status !== 'failed' && before.status !== 'expired' && before.status !== 'canceled') {
      throw new QuernError(
        'job_not_retryable',
        `only a failed, expired or canceled job can be retried (it is ${before.status})`,
        {
          extra: { job_id: found.id },
        },
      );
    }
    const { data, id } = found;
    const input = jobMatrix(data);
    if (typeof input === 'string')
      throw new QuernError('validation_failed', `the job's input cannot be run again: ${input}`);
    // The old run's rows stop counting before the new attempt is admitted under the same id.
    await this.ledger.releaseNow(data.owner, id);
    // Only once the new attempt is admitted does the old run go (a retry refused by a cap leaves
    // the job as it was): the BullMQ job, its cancel record and webhook states. One DEL each: on a
    // Cluster the three keys are on different shards.
    const removeOldRun = async () => {
      if (found.kind === 'job') {
        const removed = await found.queue.remove(id);
        if (removed !== 1) throw new QuernError('job_not_retryable', 'a worker still holds the job; retry in a moment');
      }
      await Promise.all(
        [this.keys.canceledJob(id), this.keys.webhookState(id), this.keys.cancelRequest(id)].map((key) =>
          this.redis.del(key),
        ),
      );
    };
    const { data: fresh } = await this.submit({
      beforeAdd: removeOldRun,
      model: found.model,
      input,
      mode: data.mode === 'sync' ? 'async' : data.mode,
      principal,
      requestId,
      jobId: id,
      timeoutMs: Math.max(1, data.deadline_at - data.created_at),
      priority: data.priority,
      webhook: data.webhook,
      oip: data.oip,
      attempt: (data.attempt ?? 1) + 1,
      runTimeoutMs: data.run_deadline_at !== undefined ? data.run_deadline_at - data.created_at : undefined,
    });
    return jobView({ id, data: fresh, state: 'waiting', timestamp: fresh.created_at }, found.model);
  }

  /**
   * A page of the owner's recent jobs, newest first, optionally of one status. The index is a
   * sorted set per owner the admission script writes; a page reads at most 4 × `limit` entries, so
   * a sparse status may give a short page with a cursor to go on from.
   */
  async listOwn(
    owner: string,
    options: { status?: string | undefined; limit: number; cursor?: string | undefined },
  ): Promise<{ data: JobView[]; next_cursor: string | null }> {
    const [atText, afterId] = (options.cursor ?? '').split('~');
    const at = atText ? Number(atText) : Number.POSITIVE_INFINITY;
    const budget = options.limit * 4;
    // Inclusive of the cursor's millisecond: ids at that score up to the cursor's were already given.
    const entries = (await this.ledger.recentJobs(owner, Number.isFinite(at) ? at + 1 : at, budget + 64)).filter(
      (e) => !(afterId && e.at === at && e.id >= afterId),
    );
    const scanned = entries.slice(0, budget);
    const found = await Promise.all(scanned.map((e) => this.find(e.id, owner)));
    const views = await Promise.all(found.map((f) => (f ? this.view(f) : Promise.resolve(null))));
    const data: JobView[] = [];
    let last: { id: string; at: number } | undefined;
    for (let i = 0; i < scanned.length && data.length < options.limit; i++) {
      last = scanned[i];
      const view = views[i];
      if (view && (!options.status || view.status === options.status)) data.push(view);
    }
    const more = last !== undefined && (data.length === options.limit || scanned.length === budget);
    return { data, next_cursor: more && last ? `${last.at}~${last.id}` : null };
  }

  /** Rows the principal may have queued or running at once: its key's own cap, else its tier's (0: none). */
  rowCapFor(principal: Principal): number {
    if (principal.maxRows !== undefined) return principal.maxRows;
    return principal.tier === 'premium'
      ? this.config.QUERN_CONCURRENCY_PREMIUM_ROWS
      : this.config.QUERN_CONCURRENCY_FREE_ROWS;
  }

  /**
   * The queue-depth cap and the principal's row cap, checked and counted in one script (see
   * `AdmissionLedger`), so that concurrent submissions cannot pass them together. Refused:
   * `503 queue_full` or `429 concurrency_limited`, each with a Retry-After from the drain rate.
   */
  private async admitOrRefuse(
    args: SubmitArgs,
    jobId: string,
    { queues, partition, queue }: { queues: ModelQueues; partition: number; queue: Queue },
    priorityClass: number,
    deadlineAt: number,
    push?: FastLanePush,
  ): Promise<number> {
    const { model, principal } = args;
    const rows = args.input.count;
    const maxRows = this.rowCapFor(principal);
    // The depth cap is the model's: each partition holds its share of it.
    const maxDepth = partitionDepthCap(this.config.QUERN_QUEUE_MAX_DEPTH, queues.partitions.length, partition);
    const decision = await this.ledger.admit({
      queueKey: `${queue.opts.prefix}:${queue.name}`,
      model: model.name,
      partition,
      owner: principal.id,
      jobId,
      rows,
      maxDepth,
      maxRows,
      deadlineAt,
      priorityClass,
      weight: this.weightOf(principal),
      quantumRows: this.config.QUERN_FAIR_SHARE ? fairQuantumRows(model) : 0,
      recentJobsTtlMs: this.config.QUERN_RETAIN_FAILED_SECONDS * 1000,
      push,
    });
    if (decision.kind === 'admitted') return decision.priority;
    const rate = this.drainRate(model.name);
    const clamp = (seconds: number) => String(Math.min(300, Math.max(1, Math.ceil(seconds))));
    if (decision.kind === 'queue_full') {
      const cap = maxDepth;
      throw new QuernError(
        'queue_full',
        `the ${model.name} queue is full (${decision.depth} jobs waiting); retry later`,
        { headers: { 'retry-after': clamp(rate > 0 ? (decision.depth - cap * 0.9) / rate : 30) } },
      );
    }
    // Time for the rows above the cap to drain, at about one job's rows per completion.
    const excess = decision.heldRows + rows - maxRows;
    throw new QuernError(
      'concurrency_limited',
      `this key has ${decision.heldRows} rows queued or running, and may have ${maxRows}; retry when some finish`,
      {
        headers: { 'retry-after': clamp(rate > 0 ? excess / rate : 5) },
        extra: { held_rows: decision.heldRows, max_rows: maxRows },
      },
    );
  }

  /** Adds every job submitted so far in this turn now, in one addBulk per queue. */
  flushAdds(): void {
    for (const adder of this.adders.values()) adder.flush();
  }

  /** A job's snapshot as a waiting caller hears it: a finished job gives its real answer. */
  outcomeOf(snapshot: JobSnapshot, model: ModelEntry): JobOutcome {
    const view = jobView(snapshot, model);
    switch (view.status) {
      case 'succeeded':
        return completedEvent(snapshot.returnvalue);
      case 'failed':
      case 'expired':
      case 'canceled':
        return {
          kind: 'failed',
          // A worker's failure is in the job; a canceled record and an expiry the view derives are not.
          failure:
            snapshot.state === 'failed'
              ? decodeFailure(snapshot.failedReason)
              : {
                  code: view.status === 'canceled' ? 'canceled' : 'deadline_exceeded',
                  message: view.error?.message ?? '',
                },
        };
      default:
        return { kind: 'pending', view };
    }
  }

  /** The job's state now, read from Redis, as a waiting caller hears it. */
  async currentOutcome(id: string, owner: string, model: ModelEntry): Promise<JobOutcome> {
    const found = await this.find(id, owner);
    return found ? this.outcomeOf(await this.snapshot(found), model) : { kind: 'gone' };
  }

  /** The job if it exists and belongs to `owner`; null otherwise (the caller answers 404 either way). */
  async find(id: string, owner: string): Promise<FoundJob | null> {
    if (!isId('job', id)) return null;
    // Each model's queue for the id's partition, and nowhere else: a miss (an evicted job in a
    // listing, an unknown id) costs one read per model, whatever the number of partitions.
    const home = [...this.queues.values()].map((queues) => queues.forJob(id));
    const [tombstone, ...jobs] = await Promise.all([
      this.redis.get(this.keys.canceledJob(id)),
      ...home.map((queue) => queue.getJob(id)),
    ]);
    const at = jobs.findIndex((j) => j !== undefined && j !== null);
    const job = jobs[at];
    const queue = home[at];
    if (!job || !queue) {
      if (!tombstone) return null;
      const record = decodeCanceledRecord(tombstone);
      if (!record) return null;
      const model =
        this.models.findVersion(record.data.model, record.data.model_version) ?? this.models.find(record.data.model);
      if (record.data.owner !== owner || !model) return null;
      return { kind: 'canceled', id, record, data: record.data, model };
    }
    const parsed = InferenceJobData.safeParse(job.data);
    if (!parsed.success || parsed.data.owner !== owner) return null;
    const model =
      this.models.findVersion(parsed.data.model, parsed.data.model_version) ?? this.models.find(parsed.data.model);
    if (!model) return null;
    return { kind: 'job', id, job, data: parsed.data, model, queue };
  }

  /**
   * The job's state, consistent with the fields read: a finished job's hash holds `finishedOn`
   * with its return value or failure (written together), so no second read is needed; for an
   * unfinished one BullMQ's state script tells waiting from active, and a job that finished in
   * between is read again.
   */
  async snapshot(found: FoundJob): Promise<JobSnapshot> {
    const deliveries = found.data.webhook ? await readDeliveryStates(this.redis, this.keys, found.id) : [];
    if (found.kind === 'canceled') {
      const r = found.record;
      return {
        id: r.id,
        data: r.data,
        state: 'canceled',
        timestamp: r.timestamp,
        finishedOn: r.canceled_at,
        deliveries,
      };
    }
    const finished = (job: Job) => (job.returnvalue !== null && job.returnvalue !== undefined ? 'completed' : 'failed');
    let job = found.job;
    let state: JobState | 'unknown';
    if (job.finishedOn) state = finished(job);
    else {
      state = await job.getState();
      if (state === 'completed' || state === 'failed') {
        const fresh = await found.queue.getJob(found.id);
        if (fresh?.finishedOn) {
          job = fresh;
          state = finished(fresh);
        }
      }
    }
    const snapshot: JobSnapshot = {
      id: found.id,
      data: found.data,
      state,
      returnvalue: job.returnvalue,
      failedReason: job.failedReason,
      timestamp: job.timestamp,
      processedOn: job.processedOn,
      finishedOn: job.finishedOn,
      deliveries,
    };
    const reply = state === 'active' ? this.recentReply(snapshot.id) : undefined;
    if (reply?.kind === 'completed') {
      return { ...snapshot, state: 'completed', returnvalue: reply.result, finishedOn: reply.result.finished_at };
    }
    if (reply?.kind === 'failed') {
      return {
        ...snapshot,
        state: 'failed',
        failedReason: encodeFailure(reply.failure),
        finishedOn: Date.now(),
      };
    }
    return snapshot;
  }

  async view(found: FoundJob): Promise<JobView> {
    const view = jobView(await this.snapshot(found), found.model);
    if (view.status !== 'queued' || found.kind !== 'job') return view;
    return { ...view, queue: await this.standing(found.data.model, found.id) };
  }

  /**
   * Where a queued job stands: its rank in BullMQ's priority order (one ZRANK, O(log n) at any
   * queue length), rows ahead from the mean rows per job, and an ETA from the model's drain rate;
   * none of the three ever above what an earlier read of the job said (docs/scheduling.md).
   */
  async standing(model: string, id: string): Promise<QueueStanding | null> {
    // A partitioned model: the job's own partition, served at its share of the model's rate.
    const queues = this.queuesOf(model);
    const queue = queues.forJob(id);
    const now = Date.now();
    const found = await this.ledger.standing(
      `${queue.opts.prefix}:${queue.name}`,
      model,
      id,
      this.drainRate(model) / queues.partitions.length,
      now,
      queues.partitionOf(id),
    );
    if (!found) return null;
    return {
      position: found.ahead,
      ahead_rows: found.aheadRows,
      eta_ms: found.startAt === null ? null : Math.max(0, found.startAt - now),
    };
  }

  /**
   * Cancels a job: a queued one is removed from the queue at once and kept as a `canceled`
   * record; one a worker already holds is dropped by that worker if its batch has not started
   * (workers hear the request on a channel); a finished one cannot be canceled.
   */
  async cancel(found: FoundJob): Promise<CancelOutcome> {
    const before = await this.view(found);
    if (found.kind === 'canceled' || (before.status !== 'queued' && before.status !== 'running')) {
      return { kind: 'finished', view: before };
    }
    const { job, id } = found;
    if (before.status === 'queued') {
      const removed = await found.queue.remove(id).catch(() => 0);
      if (removed === 1) {
        const record: CanceledRecord = { id, data: found.data, timestamp: job.timestamp, canceled_at: Date.now() };
        await writeCanceledRecord(this.redis, this.keys, record, this.config.QUERN_RETAIN_FAILED_SECONDS);
        this.ledger.release(found.data.owner, id);
        const snapshot = await this.snapshot({ kind: 'canceled', id, record, data: found.data, model: found.model });
        // The worker never sees this job: the `canceled` event is sent from here.
        // The cancel has happened; a webhook that cannot be queued now must not make it look failed.
        await this.webhooks
          .enqueue(snapshot, found.model, 'canceled')
          .catch((err: Error) => this.logger.warn({ job_id: id, err: err.message }, 'canceled webhook not queued'));
        return { kind: 'canceled', view: jobView(snapshot, found.model) };
      }
      // A worker took it in the meantime: ask the worker, as for a running job.
    }
    await requestCancel(this.redis, this.keys, id);
    return { kind: 'requested', view: await this.view(found) };
  }
}
