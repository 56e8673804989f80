import {
  type Config,
  encodeJobError,
  InferenceJobData,
  type InferenceResult,
  inputHash,
  type KeySpace,
  type Logger,
} from '@quern/shared';
import { type Job, UnrecoverableError } from 'bullmq';
import type { Redis } from 'ioredis';
import { type BatchScheduler, DroppedError } from './batcher';
import type { WorkerMetrics } from './metrics';
import type { ServedModel } from './models';

/** float32 has 9 significant digits; printing more only shows noise of the widening to float64. */
function toJsonNumber(value: number): number {
  return Number(value.toPrecision(9));
}

export interface ProcessorDeps {
  config: Config;
  keys: KeySpace;
  redis: Redis;
  scheduler: BatchScheduler;
  metrics: WorkerMetrics;
  logger: Logger;
}

/**
 * The BullMQ processor of one model's queue: validates the job again (the contract is checked on
 * both sides), answers rows from the result cache, hands the rest to the batch scheduler and
 * returns every row's output. Input that can never succeed fails with UnrecoverableError, so it
 * is not retried.
 */
export function createInferenceProcessor(served: ServedModel, deps: ProcessorDeps) {
  const { entry } = served;
  const { config, keys, redis, scheduler, metrics } = deps;
  const outSize = served.pool.outputSize;

  return async function processInferenceJob(job: Job): Promise<InferenceResult> {
    const parsed = InferenceJobData.safeParse(job.data);
    if (!parsed.success) {
      throw new UnrecoverableError(encodeJobError('invalid_input', 'job data does not match the job contract'));
    }
    const data = parsed.data;
    const log = deps.logger.child({ request_id: data.request_id, job_id: job.id, model: entry.name });
    if (data.model !== entry.name) {
      throw new UnrecoverableError(
        encodeJobError('invalid_input', `job for model ${data.model} on queue of ${entry.name}`),
      );
    }
    const width = entry.input.features;
    const bad = data.rows.findIndex((row) => row.length !== width);
    if (bad >= 0) {
      throw new UnrecoverableError(
        encodeJobError('invalid_input', `row ${bad} has ${data.rows[bad]?.length} features, expected ${width}`),
      );
    }

    const outputs: number[][] = new Array(data.rows.length);
    const cached: boolean[] = new Array(data.rows.length).fill(false);
    const useCache = config.QUERN_CACHE_TTL_SECONDS > 0;
    const cacheKeys = useCache ? data.rows.map((row) => keys.cache(entry.name, entry.version, inputHash(row))) : [];
    const missing: number[] = [];
    if (useCache) {
      const hits = await redis.mget(...cacheKeys);
      hits.forEach((hit, i) => {
        const value = hit === null ? undefined : parseCached(hit, outSize);
        if (value) {
          outputs[i] = value;
          cached[i] = true;
        } else {
          missing.push(i);
        }
      });
    } else {
      for (let i = 0; i < data.rows.length; i++) missing.push(i);
    }

    let startedAt = Date.now();
    let inferenceMs = 0;
    let batchSize = 0;
    if (missing.length > 0) {
      const rows = missing.map((i) => data.rows[i] as number[]);
      let result: Awaited<ReturnType<BatchScheduler['submit']>>;
      try {
        result = await scheduler.submit(entry.name, rows);
      } catch (err) {
        if (err instanceof DroppedError) throw new UnrecoverableError(encodeJobError('canceled', err.reason));
        log.error({ err: (err as Error).message }, 'inference failed');
        // Transient (a thread died, ONNX Runtime error): BullMQ retries with backoff.
        throw new Error(encodeJobError('inference_failed', 'the model failed to run on this input'));
      }
      ({ startedAt, inferenceMs, batchSize } = result);
      const pipeline = useCache ? redis.pipeline() : undefined;
      missing.forEach((rowIndex, k) => {
        const values = Array.from(result.output.subarray(k * outSize, (k + 1) * outSize), toJsonNumber);
        outputs[rowIndex] = values;
        pipeline?.set(cacheKeys[rowIndex] as string, JSON.stringify(values), 'EX', config.QUERN_CACHE_TTL_SECONDS);
      });
      if (pipeline) await pipeline.exec();
    }

    const finishedAt = Date.now();
    const queueMs = Math.max(0, startedAt - job.timestamp);
    metrics.queueWait.labels(entry.name).observe(queueMs / 1000);
    metrics.jobDuration.labels(entry.name).observe(Math.max(0, finishedAt - job.timestamp) / 1000);
    metrics.jobsFinished.labels(entry.name, 'succeeded').inc();
    log.debug({ batch_size: batchSize, queue_ms: queueMs, inference_ms: inferenceMs }, 'job done');
    return {
      outputs,
      cached,
      model_version: entry.version,
      started_at: startedAt,
      finished_at: finishedAt,
      timings: { queue_ms: queueMs, inference_ms: Math.round(inferenceMs * 1000) / 1000, batch_size: batchSize },
    };
  };
}

function parseCached(raw: string, size: number): number[] | undefined {
  try {
    const value: unknown = JSON.parse(raw);
    if (Array.isArray(value) && value.length === size && value.every((v) => typeof v === 'number')) {
      return value as number[];
    }
  } catch {
    // A corrupt entry is a miss; the fresh result overwrites it.
  }
  return undefined;
}
