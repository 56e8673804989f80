import {
  carrierOf,
  decodeCachedRow,
  decodeFailure,
  encodeCachedRow,
  encodeFailure,
  encodeReply,
  FAILURE_KINDS,
  failSpan,
  InferenceJobData,
  InferenceResult,
  inputHash,
  type JobFailure,
  type JobReply,
  type JobSnapshot,
  jobMatrix,
  type KeySpace,
  type Logger,
  type ModelEntry,
  overflowFailure,
  type Span,
  traceIdOf,
  type WebhookDispatcher,
  type WorkerConfig,
  withSpan,
} from '@quern/shared';
import { type Job, UnrecoverableError } from 'bullmq';
import { type BatchScheduler, DroppedError } from './batch-scheduler';
import type { CancelListener } from './cancel-listener';
import type { JobTracer } from './job-tracing';
import type { WorkerMetrics } from './metrics';
import { type ModelSet, type ServedModel, VersionRefused } from './models';
import type { RedisPipeline } from './redis-pipeline';
import type { ShadowRunner } from './shadow-runner';
import type { TurnLimiter } from './turn-limiter';

/** float32 has 9 significant digits; printing more only shows noise of the widening to float64. */
function toJsonNumber(value: number): number {
  return Number(value.toPrecision(9));
}

const DEADLINE_REASON = 'the job was still queued at its deadline';

export interface ProcessorDeps {
  config: WorkerConfig;
  keys: KeySpace;
  /** Cancel and cache reads, cache writes and replies: one round trip per burst of jobs. */
  io: RedisPipeline;
  scheduler: BatchScheduler;
  cancels: CancelListener;
  webhooks: WebhookDispatcher;
  /** Spreads bursts of job starts and completions over event-loop turns (lock renewal must run). */
  turns: TurnLimiter;
  metrics: WorkerMetrics;
  logger: Logger;
  /** Set when tracing is on. */
  tracer?: JobTracer | undefined;
  /** The versions this worker holds: each job runs on exactly the version it recorded. */
  models?: ModelSet | undefined;
  /** Shadow runs of answered jobs' rows on the model's shadow versions. */
  shadows?: ShadowRunner | undefined;
  /** This worker's id: a job pushed over the fast lane to another worker is completed from its early answer. */
  workerId?: string | undefined;
}

const CANCELED: JobFailure = { code: 'canceled', message: 'canceled by its owner before its batch started' };
const EXPIRED: JobFailure = { code: 'deadline_exceeded', message: DEADLINE_REASON };
const FINISHED_LATE: JobFailure = {
  code: 'deadline_exceeded',
  message: 'the job finished after its run deadline (Cancel-After); its output is not kept',
};

/** One job on its way through the processor: its checked input and what is known of its rows. */
interface Run {
  job: Job;
  id: string;
  data: InferenceJobData;
  rows: Float32Array[];
  /** The job as a webhook snapshot sees it (state and times are added per event). */
  base: { id: string; data: InferenceJobData; timestamp: number; processedOn: number };
  cacheKeys: string[];
  outputs: number[][];
  cached: boolean[];
  /** Rows the cache did not answer: they go to a batch. */
  missing: number[];
  cacheWrites: [string, string][];
  startedAt: number;
  inferenceMs: number;
  batchSize: number;
  /** The job's span, when tracing is on and the job's trace is sampled. */
  span: Span | undefined;
  /** The version the job recorded, as this worker holds it. */
  served: ServedModel;
  log: () => Logger;
}

/**
 * The BullMQ processor of one model's queue, step by step: `intake` checks the job again (the
 * contract is checked on both sides) and ends it if it is past its deadline; `lookup` reads a
 * cancel request this worker may not have heard and the cached rows (one round trip per burst of
 * jobs); `compute` hands the rest to the batch scheduler, which drops the job if it is canceled or
 * expires while it waits for a thread; `complete` stores the cache entries and pushes a sync job's
 * reply in one write, sends webhooks and counts. Input that can never succeed fails with
 * UnrecoverableError (`end`), so it is not retried; an inference error is retried by BullMQ.
 */
export function createInferenceProcessor(served: ServedModel, deps: ProcessorDeps) {
  const { entry } = served;
  const { config, keys, scheduler, metrics, cancels, webhooks, turns, io } = deps;
  const useCache = config.QUERN_CACHE_TTL_SECONDS > 0;

  /** Webhook events are best-effort from here: a queue that cannot take one does not fail the job. */
  const sendWebhook = (run: Run, snapshot: JobSnapshot, event: 'started' | 'completed' | 'failed' | 'canceled') =>
    webhooks
      .enqueue(snapshot, run.served.entry, event)
      .catch((err: Error) => run.log().warn({ err: err.message }, 'webhook enqueue failed'));

  /** A sync job's answer goes straight to the API process waiting on it (see replies.ts). */
  const replyOf = (run: Run, reply: JobReply) =>
    run.data.reply_to ? { channel: keys.replyChannel(run.data.reply_to), message: encodeReply(reply) } : undefined;

  /** Why a job waiting for a thread is dropped, if it is: canceled, or past its deadline. */
  const dropReason = (id: string, data: InferenceJobData) => (): string | null =>
    cancels.isCanceled(id) ? 'canceled by its owner' : Date.now() > data.deadline_at ? DEADLINE_REASON : null;

  /** Row `k` of a batch's output, as JSON numbers. */
  const rowOutput = (output: Float32Array, k: number, outSize: number): number[] =>
    Array.from(output.subarray(k * outSize, (k + 1) * outSize), toJsonNumber);

  /** A job's result as BullMQ records it and the reply carries it. */
  function resultOf(r: {
    outputs: number[][];
    cached: boolean[];
    version: string;
    /** When the job was enqueued (its `created_at`, BullMQ's timestamp). */
    enqueuedAt: number;
    startedAt: number;
    inferenceMs: number;
    batchSize: number;
  }): InferenceResult {
    return {
      outputs: r.outputs,
      cached: r.cached,
      model_version: r.version,
      started_at: r.startedAt,
      finished_at: Date.now(),
      timings: {
        queue_ms: Math.max(0, r.startedAt - r.enqueuedAt),
        inference_ms: Math.round(r.inferenceMs * 1000) / 1000,
        batch_size: r.batchSize,
      },
    };
  }

  /** A succeeded job's counts; a sampled trace's id becomes the buckets' exemplar. */
  function countSucceeded(version: string, queueMs: number, enqueuedAt: number, endedAt: number, span?: Span): void {
    const jobSeconds = Math.max(0, endedAt - enqueuedAt) / 1000;
    if (span) {
      const labels = { model: entry.name };
      const exemplarLabels = { trace_id: span.spanContext().traceId };
      metrics.queueWait.observe({ labels, value: queueMs / 1000, exemplarLabels });
      metrics.jobDuration.observe({ labels, value: jobSeconds, exemplarLabels });
    } else {
      metrics.queueWait.labels(entry.name).observe(queueMs / 1000);
      metrics.jobDuration.labels(entry.name).observe(jobSeconds);
    }
    metrics.jobsFinished.labels(entry.name, 'succeeded').inc();
    metrics.versionJobs.labels(entry.name, version, 'succeeded').inc();
    metrics.versionJobDuration.labels(entry.name, version).observe(jobSeconds);
  }

  /** Ends the job without a result: its webhook event and reply first, then the failure BullMQ records. */
  async function end(run: Run, failure: JobFailure, event: 'failed' | 'canceled'): Promise<never> {
    const failedReason = encodeFailure(failure);
    await Promise.all([
      sendWebhook(run, { ...run.base, state: 'failed', failedReason, finishedOn: Date.now() }, event),
      io
        .setEx([], replyOf(run, { kind: 'failed', job_id: run.id, failure }))
        .catch((err: Error) => run.log().warn({ err: err.message }, 'reply not published')),
    ]);
    throw new UnrecoverableError(failedReason);
  }

  /** The job's data and rows, checked; a job that can never run ends here. */
  async function intake(job: Job): Promise<Run> {
    const parsed = InferenceJobData.safeParse(job.data);
    const refuse = (message: string) => new UnrecoverableError(encodeFailure({ code: 'invalid_input', message }));
    if (!parsed.success) throw refuse('job data does not match the job contract');
    const data = parsed.data;
    if (data.model !== entry.name) throw refuse(`job for model ${data.model} on queue of ${entry.name}`);
    const id = job.id as string;
    // A child logger costs a little; most jobs never log, so make it only when needed.
    let child: Logger | undefined;
    const run: Run = {
      job,
      id,
      data,
      rows: [],
      base: { id, data, timestamp: job.timestamp, processedOn: job.processedOn ?? Date.now() },
      cacheKeys: [],
      outputs: [],
      cached: [],
      missing: [],
      cacheWrites: [],
      startedAt: Date.now(),
      inferenceMs: 0,
      batchSize: 0,
      span: undefined,
      served,
      log: () => {
        child ??= deps.logger.child({
          request_id: data.request_id,
          job_id: id,
          model: entry.name,
          ...(data.trace ? { trace_id: traceIdOf(data.trace) } : {}),
        });
        return child;
      },
    };
    if (deps.models) {
      // The version the job recorded (pinned, or picked by the canary weights), exactly.
      try {
        run.served = deps.models ? await deps.models.ensure(data.model, data.model_version) : served;
      } catch (err) {
        if (!(err instanceof VersionRefused)) throw err;
        return end(run, { code: 'model_unavailable', message: err.message }, 'failed');
      }
    }
    const matrix = jobMatrix(data);
    if (typeof matrix === 'string') return end(run, { code: 'invalid_input', message: matrix }, 'failed');
    const width = run.served.entry.input.features;
    if (matrix.width !== width) {
      return end(
        run,
        { code: 'invalid_input', message: `row 0 has ${matrix.width} features, expected ${width}` },
        'failed',
      );
    }
    if (Date.now() > data.deadline_at) return end(run, EXPIRED, 'failed');
    run.rows = matrix.rows();
    run.outputs = new Array(matrix.count);
    run.cached = new Array(matrix.count).fill(false);
    run.cacheKeys = useCache
      ? run.rows.map((row) => keys.cache(entry.name, run.served.entry.version, inputHash(row)))
      : [];
    if (deps.tracer && data.trace) {
      const span = deps.tracer.startJob({ ...data, trace: data.trace }, id, job.attemptsMade + 1);
      // Only a trace the sampler kept is followed further (a left-out one records nothing).
      if (span.isRecording()) {
        run.span = span;
        // Webhook deliveries of this job join its trace under the job's span.
        const trace = carrierOf(withSpan(span));
        if (trace) run.base = { ...run.base, data: { ...data, trace } };
      }
    }
    return run;
  }

  /**
   * A cancel request this worker may not have heard, and the cached rows, in one round trip. A
   * sync call's rows were looked up by the API a moment ago (and its caller cancels through the
   * channel this worker listens on): those skip the round trip.
   */
  async function lookup(run: Run): Promise<void> {
    let hits: (string | null)[] = [];
    if (!run.data.cache_checked) {
      const [cancelRequested, ...cachedRows] = await io.mget([keys.cancelRequest(run.id), ...run.cacheKeys]);
      if (cancelRequested !== null) cancels.remember(run.id);
      hits = cachedRows;
    }
    if (cancels.isCanceled(run.id)) await end(run, CANCELED, 'canceled');
    const outSize = run.served.pool.outputSize;
    for (let i = 0; i < run.rows.length; i++) {
      const value = decodeCachedRow(hits[i] ?? null, outSize);
      if (value) {
        run.outputs[i] = value;
        run.cached[i] = true;
      } else {
        run.missing.push(i);
      }
    }
  }

  /** The rows the cache did not answer, computed in batches with other jobs' rows. */
  async function compute(run: Run): Promise<void> {
    const { id, data, missing } = run;
    const rows = missing.length === run.rows.length ? run.rows : missing.map((i) => run.rows[i] as Float32Array);
    let result: Awaited<ReturnType<BatchScheduler['submit']>>;
    try {
      result = await scheduler.submit(run.served.pool.name, rows, {
        id,
        // Fair share off: one lane, first come first served, as in the queue.
        owner: config.QUERN_FAIR_SHARE ? data.owner : undefined,
        weight: data.weight,
        shouldDrop: dropReason(id, data),
        onStart: webhooks.wants(data, 'started')
          ? () => void sendWebhook(run, { ...run.base, state: 'active' }, 'started')
          : undefined,
        trace: run.span?.spanContext(),
      });
    } catch (err) {
      if (err instanceof DroppedError)
        return end(
          run,
          err.reason === DEADLINE_REASON ? EXPIRED : CANCELED,
          err.reason === DEADLINE_REASON ? 'failed' : 'canceled',
        );
      run.log().error({ err: (err as Error).message }, 'inference failed');
      const failedReason = encodeFailure({
        code: 'inference_failed',
        message: 'the model failed to run on this input',
      });
      if (run.job.attemptsMade + 1 >= (run.job.opts.attempts ?? 1)) {
        await sendWebhook(run, { ...run.base, state: 'failed', failedReason, finishedOn: Date.now() }, 'failed');
      }
      // Transient (a thread died, ONNX Runtime error): BullMQ retries with backoff.
      throw new Error(failedReason);
    }
    // A big batch finishes many jobs at once: finish them a group per event-loop turn.
    await turns.pass();
    run.startedAt = result.startedAt;
    run.inferenceMs = result.inferenceMs;
    run.batchSize = result.batchSize;
    let overflowRow = -1;
    const outSize = run.served.pool.outputSize;
    missing.forEach((rowIndex, k) => {
      const values = rowOutput(result.output, k, outSize);
      if (overflowRow < 0 && !values.every(Number.isFinite)) overflowRow = rowIndex;
      run.outputs[rowIndex] = values;
      if (useCache) run.cacheWrites.push([run.cacheKeys[rowIndex] as string, encodeCachedRow(values)]);
    });
    // A run deadline (Cancel-After) covers the run: a batch that ended after it does not count.
    if (data.run_deadline_at !== undefined && Date.now() > data.run_deadline_at)
      await end(run, FINISHED_LATE, 'failed');
    // A finite input can still overflow float32 inside the model (3e38 × a weight): JSON has no
    // infinity, so such a row would read as null. The input is what cannot be computed: say which.
    if (overflowRow >= 0) await end(run, overflowFailure(overflowRow), 'failed');
  }

  /** The result: cache entries and the reply in one write, then webhooks and metrics. */
  async function complete(run: Run): Promise<InferenceResult> {
    const output = resultOf({
      outputs: run.outputs,
      cached: run.cached,
      version: run.served.entry.version,
      enqueuedAt: run.job.timestamp,
      startedAt: run.startedAt,
      inferenceMs: run.inferenceMs,
      batchSize: run.batchSize,
    });
    const { finished_at: finishedAt, timings } = output;
    const reply = run.span && deps.tracer?.startReply(run.span);
    // Awaited, so that once the job shows as completed a repeat of its input is a cache hit.
    await io.setEx(run.cacheWrites, replyOf(run, { kind: 'completed', job_id: run.id, result: output }));
    if (webhooks.wants(run.data, 'completed')) {
      await webhooks.enqueue(
        { ...run.base, state: 'completed', returnvalue: output, finishedOn: finishedAt },
        run.served.entry,
        'completed',
      );
    }
    reply?.end();
    const version = run.served.entry.version;
    countSucceeded(version, timings.queue_ms, run.job.timestamp, finishedAt, run.span);
    // After the answer went out (reply and cache written above): the caller never waits for it.
    deps.shadows?.offer(entry.name, version, run.rows, run.outputs);
    if (deps.logger.isLevelEnabled('debug')) {
      run
        .log()
        .debug({ batch_size: run.batchSize, queue_ms: timings.queue_ms, inference_ms: run.inferenceMs }, 'job done');
    }
    return output;
  }

  /**
   * An early answer: the result, the run it belongs to (the job's `created_at`: a later run of the
   * id, a client's retry, is another run) and, when shadow versions run, the rows it came from.
   */
  type Early = { result: InferenceResult; createdAt: number; rows: Float32Array[] | undefined } | undefined;
  /**
   * The fast lane (docs/architecture.md): a small sync job's admission script also pushes it
   * straight to this worker over pub/sub. An idle worker computes it at once and sends the reply
   * (with the cache entries and the early answer's record, in one write) without waiting for BullMQ
   * to hand the job over; the BullMQ job stays the record. When BullMQ delivers it here,
   * `processInferenceJob` takes the result from this map; on another worker, from the record in
   * Redis (`earlyAnswer`). Anything unusual (a busy worker, a version not held, tracing or webhooks
   * on the job, an error) leaves the job to the BullMQ path alone.
   */
  const early = new Map<string, { at: number; result: Promise<Early>; taken?: boolean }>();
  /** How long an early answer is kept for its BullMQ delivery (here, and as the record in Redis). */
  const EARLY_KEEP_MS = 60_000;
  const EARLY_MAX = 2_000;
  const NOTHING = Promise.resolve<Early>(undefined);

  /** Keeps `entry` under `id`; entries past their time go first (oldest first), and the oldest past EARLY_MAX. */
  function keep(id: string, entry: { at: number; result: Promise<Early>; taken?: boolean }): void {
    for (const [key, old] of early) {
      if (entry.at - old.at < EARLY_KEEP_MS && early.size < EARLY_MAX) break;
      early.delete(key);
    }
    early.set(id, entry);
  }

  async function computeEarly(id: string, data: InferenceJobData, held: ServedModel): Promise<Early> {
    const matrix = jobMatrix(data);
    if (typeof matrix === 'string' || matrix.width !== held.entry.input.features) return undefined;
    const rows = matrix.rows();
    let result: Awaited<ReturnType<BatchScheduler['submit']>>;
    try {
      result = await scheduler.submit(held.pool.name, rows, {
        id,
        owner: config.QUERN_FAIR_SHARE ? data.owner : undefined,
        weight: data.weight,
        shouldDrop: dropReason(id, data),
      });
    } catch {
      return undefined;
    }
    const outSize = held.pool.outputSize;
    const outputs: number[][] = [];
    const cacheWrites: [string, string][] = [];
    for (let k = 0; k < rows.length; k++) {
      const values = rowOutput(result.output, k, outSize);
      // An overflow, or a run deadline passed: the BullMQ path ends the job as it should.
      if (!values.every(Number.isFinite)) return undefined;
      outputs.push(values);
      if (useCache)
        cacheWrites.push([
          keys.cache(entry.name, held.entry.version, inputHash(rows[k] as Float32Array)),
          encodeCachedRow(values),
        ]);
    }
    if (data.run_deadline_at !== undefined && Date.now() > data.run_deadline_at) return undefined;
    const output = resultOf({
      outputs,
      cached: new Array(rows.length).fill(false),
      version: held.entry.version,
      enqueuedAt: data.created_at,
      startedAt: result.startedAt,
      inferenceMs: result.inferenceMs,
      batchSize: result.batchSize,
    });
    const reply = {
      channel: keys.replyChannel(data.reply_to as string),
      message: encodeReply({ kind: 'completed', job_id: id, result: output }),
    };
    // The record another worker completes the job from, if BullMQ hands it the job.
    const record: [string, string, number] = [
      keys.earlyAnswer(id),
      JSON.stringify({ created_at: data.created_at, result: output }),
      EARLY_KEEP_MS / 1000,
    ];
    try {
      await io.setEx([...cacheWrites, record], reply);
    } catch {
      return undefined;
    }
    metrics.fastLane.labels(entry.name, 'answered').inc();
    return { result: output, createdAt: data.created_at, rows: deps.shadows ? rows : undefined };
  }

  /** A job pushed over the fast lane (`raw` as the API published it); see `early` above. */
  function fast(id: string, raw: unknown): void {
    // Busy (rows already wait for a thread): the job waits its turn in the queue like any other.
    if (scheduler.pendingRows() > 0) {
      metrics.fastLane.labels(entry.name, 'busy').inc();
      return;
    }
    if (early.has(id)) return;
    const parsed = InferenceJobData.safeParse(raw);
    if (!parsed.success) return;
    const data = parsed.data;
    const held = deps.models ? deps.models.get(data.model, data.model_version) : served;
    const skip =
      data.model !== entry.name ||
      !data.reply_to ||
      !data.cache_checked ||
      data.trace !== undefined ||
      data.webhook !== undefined ||
      held === undefined ||
      held.entry.version !== data.model_version ||
      cancels.isCanceled(id) ||
      Date.now() > data.deadline_at;
    if (skip) {
      metrics.fastLane.labels(entry.name, 'skipped').inc();
      return;
    }
    keep(id, { at: Date.now(), result: computeEarly(id, data, held) });
  }

  async function steps(run: Run): Promise<InferenceResult> {
    await lookup(run);
    if (run.missing.length > 0) await compute(run);
    else if (webhooks.wants(run.data, 'started')) {
      // Answered from the cache: no batch starts, but the job did; receivers still see `started` first.
      await sendWebhook(run, { ...run.base, state: 'active' }, 'started');
    }
    return complete(run);
  }

  /** The steps inside the job's span: its outcome, rows and batch size on it. */
  async function traced(run: Run, span: Span): Promise<InferenceResult> {
    try {
      const result = await steps(run);
      span.setAttributes({
        'quern.rows': run.rows.length,
        'quern.cached_rows': run.rows.length - run.missing.length,
        'quern.batch_size': run.batchSize,
      });
      return result;
    } catch (err) {
      failSpan(span, err);
      throw err;
    } finally {
      span.end();
    }
  }

  /** The early answer of this run of a job pushed to another worker, from its record in Redis. */
  async function recordedEarly(id: string, data: Partial<InferenceJobData>): Promise<Early> {
    const [raw] = await io.mget([keys.earlyAnswer(id)]);
    if (!raw) return undefined;
    try {
      const kept = JSON.parse(raw) as { created_at?: unknown; result?: unknown };
      const result = InferenceResult.safeParse(kept.result);
      if (!result.success || kept.created_at !== data.created_at) return undefined;
      return { result: result.data, createdAt: data.created_at as number, rows: undefined };
    } catch {
      return undefined;
    }
  }

  async function processInferenceJob(job: Job): Promise<InferenceResult> {
    const id = job.id as string;
    const data = (job.data ?? {}) as Partial<InferenceJobData>;
    const answered = early.get(id);
    // A sync job the queue hands over before its push is heard: the push is then not run as well.
    const guarded = config.QUERN_SYNC_FAST_LANE && data.reply_to !== undefined && answered === undefined;
    if (guarded) keep(id, { at: Date.now(), result: NOTHING, taken: true });
    try {
      await turns.pass();
      // Answered over the fast lane already (reply and cache written, from the same data, checked
      // there): only the record is left. Only for this run of the id, on the version it recorded.
      let done: Early;
      if (answered && !answered.taken) {
        early.delete(id);
        done = await answered.result;
      } else if (data.fast_lane !== undefined && data.fast_lane !== deps.workerId) {
        done = await recordedEarly(id, data);
        if (done) metrics.fastLane.labels(entry.name, 'recorded').inc();
      }
      if (done && done.createdAt === data.created_at && done.result.model_version === data.model_version) {
        return completeEarly(job, done);
      }
      const run = await intake(job);
      if (run.span) return await traced(run, run.span);
      // Untraced, the steps run here rather than through steps(): no extra promise per job.
      await lookup(run);
      if (run.missing.length > 0) await compute(run);
      else if (webhooks.wants(run.data, 'started')) {
        await sendWebhook(run, { ...run.base, state: 'active' }, 'started');
      }
      return await complete(run);
    } finally {
      if (guarded && early.get(id)?.taken) early.delete(id);
    }
  }

  /** The BullMQ side of a job the fast lane answered: the counts `complete` would make. */
  function completeEarly(job: Job, done: NonNullable<Early>): InferenceResult {
    const { result, rows } = done;
    countSucceeded(result.model_version, result.timings.queue_ms, job.timestamp, Date.now());
    if (rows) deps.shadows?.offer(entry.name, result.model_version, rows, result.outputs);
    return result;
  }

  return Object.assign(processInferenceJob, { fast });
}

/**
 * What happens after BullMQ fails a job (the `failed` event of the model's consumer): the
 * outcome is counted (`retried` while attempts remain), and a job BullMQ failed for stalling too
 * often, without running our processor, gets its `failed` webhook from here.
 */
export function createFailedListener(
  entry: ModelEntry,
  deps: { metrics: WorkerMetrics; webhooks: WebhookDispatcher; logger: Logger },
) {
  return (job: Job | undefined, err: Error): void => {
    if (!job) return;
    const final = job.attemptsMade >= (job.opts.attempts ?? 1) || err.name === 'UnrecoverableError';
    const { code } = decodeFailure(err.message);
    const outcome = final ? FAILURE_KINDS[code].status : 'retried';
    deps.metrics.jobsFinished.labels(entry.name, outcome).inc();
    const data = InferenceJobData.safeParse(job.data);
    if (data.success) deps.metrics.versionJobs.labels(entry.name, data.data.model_version, outcome).inc();
    if (code !== 'worker_lost' || !data.success) return;
    const snapshot: JobSnapshot = {
      id: job.id as string,
      data: data.data,
      state: 'failed',
      timestamp: job.timestamp,
      processedOn: job.processedOn,
      failedReason: err.message,
      finishedOn: job.finishedOn ?? Date.now(),
    };
    deps.webhooks
      .enqueue(snapshot, entry, 'failed')
      .catch((e: Error) => deps.logger.warn({ job_id: job.id, err: e.message }, 'webhook enqueue failed'));
  };
}
