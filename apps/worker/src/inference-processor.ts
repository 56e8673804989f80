import {
  type Config,
  decodeCachedRow,
  encodeCachedRow,
  encodeFailure,
  encodeReply,
  InferenceJobData,
  type InferenceResult,
  inputHash,
  type JobFailure,
  type JobReply,
  type JobSnapshot,
  jobMatrix,
  type KeySpace,
  type Logger,
  overflowFailure,
  type WebhookDispatcher,
} from '@quern/shared';
import { type Job, UnrecoverableError } from 'bullmq';
import { type BatchScheduler, DroppedError } from './batch-scheduler';
import type { CancelListener } from './cancel-listener';
import type { WorkerMetrics } from './metrics';
import type { ServedModel } from './models';
import type { RedisPipeline } from './redis-pipeline';
import type { TurnLimiter } from './turn-limiter';

/** float32 has 9 significant digits; printing more only shows noise of the widening to float64. */
function toJsonNumber(value: number): number {
  return Number(value.toPrecision(9));
}

const DEADLINE_REASON = 'the job was still queued at its deadline';

export interface ProcessorDeps {
  config: Config;
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
}

/**
 * The BullMQ processor of one model's queue. It validates the job again (the contract is checked
 * on both sides); drops it without computing if it is past its deadline (`expired`) or canceled;
 * answers rows from the result cache; hands the rest to the batch scheduler, which drops it too if
 * it is canceled or expires while it waits for a thread; and returns every row's output. Input
 * that can never succeed fails with UnrecoverableError, so it is not retried. Webhook events
 * (`started`, `completed`, `failed`, `canceled`) are enqueued as the job passes through them.
 */
export function createInferenceProcessor(served: ServedModel, deps: ProcessorDeps) {
  const { entry } = served;
  const { config, keys, scheduler, metrics, cancels, webhooks, turns, io } = deps;
  const outSize = served.pool.outputSize;

  return async function processInferenceJob(job: Job): Promise<InferenceResult> {
    await turns.pass();
    const parsed = InferenceJobData.safeParse(job.data);
    if (!parsed.success) {
      throw new UnrecoverableError(
        encodeFailure({ code: 'invalid_input', message: 'job data does not match the job contract' }),
      );
    }
    const data = parsed.data;
    const id = job.id as string;
    // A child logger costs a little; most jobs never log, so make it only when needed.
    let child: Logger | undefined;
    const log = () => {
      child ??= deps.logger.child({ request_id: data.request_id, job_id: id, model: entry.name });
      return child;
    };
    const base = { id, data, timestamp: job.timestamp, processedOn: job.processedOn ?? Date.now() };
    // A sync job's answer goes straight to the API process waiting on it, in the write that
    // stores its cache entries, before BullMQ records the job as finished (see replies.ts).
    const replyOf = (reply: JobReply) =>
      data.reply_to ? { channel: keys.replyChannel(data.reply_to), message: encodeReply(reply) } : undefined;

    /** Ends the job without a result: the webhook event first, then the failure BullMQ records. */
    const end = async (failure: JobFailure, event: 'failed' | 'canceled'): Promise<never> => {
      const failedReason = encodeFailure(failure);
      const snapshot: JobSnapshot = { ...base, state: 'failed', failedReason, finishedOn: Date.now() };
      await Promise.all([
        webhooks
          .enqueue(snapshot, entry, event)
          .catch((err: Error) => log().warn({ err: err.message }, 'webhook enqueue failed')),
        io
          .setEx([], replyOf({ kind: 'failed', job_id: id, failure }))
          .catch((err: Error) => log().warn({ err: err.message }, 'reply not published')),
      ]);
      throw new UnrecoverableError(failedReason);
    };

    if (data.model !== entry.name) {
      throw new UnrecoverableError(
        encodeFailure({ code: 'invalid_input', message: `job for model ${data.model} on queue of ${entry.name}` }),
      );
    }
    const width = entry.input.features;
    const matrix = jobMatrix(data);
    if (typeof matrix === 'string') return end({ code: 'invalid_input', message: matrix }, 'failed');
    if (matrix.width !== width) {
      return end({ code: 'invalid_input', message: `row 0 has ${matrix.width} features, expected ${width}` }, 'failed');
    }
    const inputRows = matrix.rows();
    if (Date.now() > data.deadline_at) return end({ code: 'deadline_exceeded', message: DEADLINE_REASON }, 'failed');

    // One round trip: a cancel request this worker may not have heard, and the cached rows.
    const useCache = config.QUERN_CACHE_TTL_SECONDS > 0;
    const cacheKeys = useCache ? inputRows.map((row) => keys.cache(entry.name, entry.version, inputHash(row))) : [];
    // A sync call's rows were looked up by the API a moment ago (and its caller cancels through
    // the channel this worker listens on): skip the round trip for those.
    const lookup = !data.cache_checked;
    let hits: (string | null)[] = [];
    if (lookup) {
      // One MGET for every job this worker starts in this turn (RedisPipeline).
      const [cancelRequested, ...cachedRows] = await io.mget([keys.cancelRequest(id), ...cacheKeys]);
      if (cancelRequested !== null) cancels.remember(id);
      hits = cachedRows;
    }
    if (cancels.isCanceled(id))
      return end({ code: 'canceled', message: 'canceled by its owner before its batch started' }, 'canceled');

    const outputs: number[][] = new Array(matrix.count);
    const cached: boolean[] = new Array(matrix.count).fill(false);
    const missing: number[] = [];
    for (let i = 0; i < matrix.count; i++) {
      const hit = hits[i];
      const value = decodeCachedRow(hit ?? null, outSize);
      if (value) {
        outputs[i] = value;
        cached[i] = true;
      } else {
        missing.push(i);
      }
    }

    let cacheWrites: [string, string][] = [];
    let startedAt = Date.now();
    let inferenceMs = 0;
    let batchSize = 0;
    if (missing.length === 0 && webhooks.wants(data, 'started')) {
      // Answered from the cache: no batch starts, but the job did; receivers still see `started` first.
      await webhooks
        .enqueue({ ...base, state: 'active' }, entry, 'started')
        .catch((err: Error) => log().warn({ err: err.message }, 'webhook enqueue failed'));
    }
    if (missing.length > 0) {
      const rows = missing.length === matrix.count ? inputRows : missing.map((i) => inputRows[i] as Float32Array);
      let result: Awaited<ReturnType<BatchScheduler['submit']>>;
      try {
        result = await scheduler.submit(entry.name, rows, {
          id,
          shouldDrop: () =>
            cancels.isCanceled(id) ? 'canceled by its owner' : Date.now() > data.deadline_at ? DEADLINE_REASON : null,
          onStart: webhooks.wants(data, 'started')
            ? () =>
                void webhooks
                  .enqueue({ ...base, state: 'active' }, entry, 'started')
                  .catch((err: Error) => log().warn({ err: err.message }, 'webhook enqueue failed'))
            : undefined,
        });
      } catch (err) {
        if (err instanceof DroppedError) {
          return err.reason === DEADLINE_REASON
            ? end({ code: 'deadline_exceeded', message: DEADLINE_REASON }, 'failed')
            : end({ code: 'canceled', message: 'canceled by its owner before its batch started' }, 'canceled');
        }
        log().error({ err: (err as Error).message }, 'inference failed');
        const message = encodeFailure({ code: 'inference_failed', message: 'the model failed to run on this input' });
        if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
          await webhooks
            .enqueue({ ...base, state: 'failed', failedReason: message, finishedOn: Date.now() }, entry, 'failed')
            .catch((e: Error) => log().warn({ err: e.message }, 'webhook enqueue failed'));
        }
        // Transient (a thread died, ONNX Runtime error): BullMQ retries with backoff.
        throw new Error(message);
      }
      // A big batch finishes many jobs at once: finish them a group per event-loop turn.
      await turns.pass();
      ({ startedAt, inferenceMs, batchSize } = result);
      const writes: [string, string][] = [];
      let overflowRow = -1;
      missing.forEach((rowIndex, k) => {
        const values = Array.from(result.output.subarray(k * outSize, (k + 1) * outSize), toJsonNumber);
        if (overflowRow < 0 && !values.every(Number.isFinite)) overflowRow = rowIndex;
        outputs[rowIndex] = values;
        if (useCache) writes.push([cacheKeys[rowIndex] as string, encodeCachedRow(values)]);
      });
      // A finite input can still overflow float32 inside the model (3e38 × a weight): JSON has no
      // infinity, so such a row would read as null. The input is what cannot be computed: say which.
      if (overflowRow >= 0) {
        return end(overflowFailure(overflowRow), 'failed');
      }
      cacheWrites = writes;
    }

    const finishedAt = Date.now();
    const queueMs = Math.max(0, startedAt - job.timestamp);
    const output: InferenceResult = {
      outputs,
      cached,
      model_version: entry.version,
      started_at: startedAt,
      finished_at: finishedAt,
      timings: { queue_ms: queueMs, inference_ms: Math.round(inferenceMs * 1000) / 1000, batch_size: batchSize },
    };
    // Awaited, so that once the job shows as completed a repeat of its input is a cache hit.
    await io.setEx(cacheWrites, replyOf({ kind: 'completed', job_id: id, result: output }));
    if (webhooks.wants(data, 'completed')) {
      await webhooks.enqueue(
        { ...base, state: 'completed', returnvalue: output, finishedOn: finishedAt },
        entry,
        'completed',
      );
    }
    metrics.queueWait.labels(entry.name).observe(queueMs / 1000);
    metrics.jobDuration.labels(entry.name).observe(Math.max(0, finishedAt - job.timestamp) / 1000);
    metrics.jobsFinished.labels(entry.name, 'succeeded').inc();
    if (deps.logger.isLevelEnabled('debug')) {
      log().debug({ batch_size: batchSize, queue_ms: queueMs, inference_ms: inferenceMs }, 'job done');
    }
    return output;
  };
}
