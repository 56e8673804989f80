import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ApiConfig, CommonConfig } from './config';
import { OipJobFormat } from './oip';
import { type Row, RowMatrix } from './row-matrix';
import { TraceCarrier } from './tracing';
import { WebhookSpec } from './webhooks';

/** How a job was submitted; used for metrics and to shape the response. */
export const SubmitMode = z.enum(['async', 'sync', 'batch']);
export type SubmitMode = z.infer<typeof SubmitMode>;

const FLOAT32_MAX = 3.4028234663852886e38;
export const MAX_FEATURES = 65_536;
const BAD_FEATURE = 'must be a finite number within float32 range';

/**
 * Checks one input row: 1 to 65 536 numbers, each finite and within float32 range, naming the
 * first bad element (`[3]`). A loop, not a zod schema per number: rows of hundreds of features
 * arrive thousands of times a second, and a schema per element costs about a hundred times more.
 */
export function checkFeatureRow(value: unknown, ctx: z.RefinementCtx): void {
  if (!Array.isArray(value)) {
    ctx.addIssue({ code: 'custom', message: 'must be an array of numbers' });
    return;
  }
  if (value.length < 1 || value.length > MAX_FEATURES) {
    ctx.addIssue({ code: 'custom', message: `must hold 1 to ${MAX_FEATURES} numbers` });
    return;
  }
  for (let i = 0; i < value.length; i++) {
    const v: unknown = value[i];
    if (typeof v !== 'number' || !Number.isFinite(v) || Math.abs(v) > FLOAT32_MAX) {
      ctx.addIssue({ code: 'custom', path: [i], message: BAD_FEATURE });
      return;
    }
  }
}

/** One input row of a model: see `checkFeatureRow`. */
export const FeatureRow = z.custom<number[]>(() => true).superRefine(checkFeatureRow);

/** Input rows packed as little-endian float32 in base64: see `RowMatrix`. */
export const PackedRows = z.object({
  count: z.number().int().min(1),
  width: z.number().int().min(1).max(MAX_FEATURES),
  f32: z.string(),
});
export type PackedRows = z.infer<typeof PackedRows>;

/**
 * Data of an inference job, as written by the API and checked again by the worker. It holds
 * no secret: the owner is a principal id, never a key or token.
 */
export const InferenceJobData = z
  .object({
    v: z.literal(1),
    model: z.string(),
    model_version: z.string(),
    /**
     * The input: one row for a single prediction, up to the batch limit for batch-predict. The
     * API writes `input` (packed); `rows` (JSON numbers) is read too, for jobs from older APIs.
     */
    input: PackedRows.optional(),
    rows: z.array(FeatureRow).min(1).optional(),
    mode: SubmitMode,
    owner: z.string(),
    request_id: z.string(),
    created_at: z.number().int(),
    /**
     * The API process waiting for this job's answer (sync calls): the worker publishes the result
     * on that process's reply channel, in the same write as the cache entries.
     */
    reply_to: z.string().max(64).optional(),
    /**
     * The worker this sync job was pushed to over the fast lane (docs/architecture.md): another
     * worker BullMQ hands the job to first reads that worker's early answer (`earlyAnswer`).
     */
    fast_lane: z.string().max(64).optional(),
    /** The API looked every row up in the result cache just before enqueueing (sync calls). */
    cache_checked: z.boolean().optional(),
    /** Epoch ms after which the job is not computed any more and ends `expired`. */
    deadline_at: z.number().int(),
    /**
     * Run deadline (`Cancel-After`): the job must have finished by then. Still queued or waiting for
     * its batch then, it ends `expired` (`deadline_at` is never later); its batch running then, it
     * finishes but ends `expired`, its output not shown.
     */
    run_deadline_at: z.number().int().optional(),
    /** The job's priority class (1 is the highest); its BullMQ priority is a fair-share number within the class. */
    priority: z.number().int().min(1),
    /** The client's retry (`POST /v1/jobs/{id}/retry`) this run is: 2 for the first retry; absent for the first run. */
    attempt: z.number().int().min(2).optional(),
    /** The owner's fair-share weight, when not 1: the worker's batches share rows by it too. */
    weight: z.number().positive().optional(),
    webhook: WebhookSpec.optional(),
    /** The trace the job belongs to (W3C trace context of the API's enqueue span), when tracing is on. */
    trace: TraceCarrier.optional(),
    /** Created through the Open Inference Protocol (`/v2`): the job's output is shown as an OIP response. */
    oip: OipJobFormat.optional(),
  })
  .refine((d) => (d.input === undefined) !== (d.rows === undefined), {
    message: 'a job holds exactly one of input and rows',
  });
export type InferenceJobData = z.infer<typeof InferenceJobData>;

/** What a worker stores as the job's return value. */
export const InferenceResult = z.object({
  /** One output row per input row, each of the model's output size. */
  outputs: z.array(z.array(z.number())),
  /** Which rows came from the result cache instead of being computed. */
  cached: z.array(z.boolean()),
  model_version: z.string(),
  started_at: z.number().int(),
  finished_at: z.number().int(),
  timings: z.object({
    queue_ms: z.number(),
    inference_ms: z.number(),
    batch_size: z.number().int(),
  }),
});
export type InferenceResult = z.infer<typeof InferenceResult>;

/** BullMQ job name of inference jobs. */
export const INFERENCE_JOB_NAME = 'infer';

/** How long finished inference jobs are kept, from config: the API sets it on each job, the worker on completion. */
export function jobRetention(
  config: Pick<
    CommonConfig,
    'QUERN_RETAIN_COMPLETED_SECONDS' | 'QUERN_RETAIN_COMPLETED_COUNT' | 'QUERN_RETAIN_FAILED_SECONDS'
  >,
) {
  return {
    removeOnComplete: { age: config.QUERN_RETAIN_COMPLETED_SECONDS, count: config.QUERN_RETAIN_COMPLETED_COUNT },
    removeOnFail: { age: config.QUERN_RETAIN_FAILED_SECONDS },
  };
}

/** Retry, backoff and retention of inference jobs, from config: one definition for API and tests. */
export function inferenceJobOptions(
  config: Pick<ApiConfig, 'QUERN_JOB_ATTEMPTS' | 'QUERN_JOB_BACKOFF_MS'> & Parameters<typeof jobRetention>[0],
) {
  return {
    attempts: config.QUERN_JOB_ATTEMPTS,
    backoff: { type: 'exponential' as const, delay: config.QUERN_JOB_BACKOFF_MS },
    ...jobRetention(config),
  };
}

/**
 * Canonical hash of one input row for the result cache. Values are hashed as the float32 the
 * model sees, so `1` and `1.0000000001` share an entry exactly when the model cannot tell them apart.
 */
export function inputHash(row: Row): string {
  const f32 = row instanceof Float32Array ? row : Float32Array.from(row);
  const buf = Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength);
  return createHash('sha256').update(buf).digest('base64url');
}

/** How many input rows a job holds. */
export function jobRowCount(data: InferenceJobData): number {
  return data.input?.count ?? data.rows?.length ?? 0;
}

/** A job's input rows as one matrix, or a message saying why they cannot be one. */
export function jobMatrix(data: InferenceJobData): RowMatrix | string {
  if (data.input) return RowMatrix.fromBase64(data.input.f32, data.input.count, data.input.width);
  const rows = data.rows ?? [];
  const width = rows[0]?.length ?? 0;
  const bad = rows.findIndex((row) => row.length !== width);
  return bad >= 0 ? `row ${bad} has ${rows[bad]?.length} features, row 0 has ${width}` : RowMatrix.fromRows(rows);
}
