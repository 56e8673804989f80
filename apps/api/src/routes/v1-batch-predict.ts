import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { type JobView, type ModelEntry, presentPrediction, RowMatrix } from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import {
  FeaturesSchema,
  JobOptionsShape,
  JobSchema,
  ModelNameSchema,
  PROTECTED,
  PredictionSchema,
  problems,
} from '../schemas';
import { CancelAfterHeader, cancelAfterMs } from './cancel-after';
import { deprecatedAlias, deprecationHeaderShape } from './deprecated-alias';
import { checkRows, MAX_BATCH_ROWS, TensorInputSchema, tensorRows } from './inference-input';
import { cachedRows, runSync, syncPreferences } from './sync-call';

export const BatchPredictRequestSchema = z
  .object({
    model: ModelNameSchema,
    requests: z
      .array(z.object({ features: FeaturesSchema }))
      .min(1)
      .max(MAX_BATCH_ROWS)
      .optional()
      .openapi({
        description: `1 to ${MAX_BATCH_ROWS} rows as JSON numbers, run as one job. Give this or \`tensor\`.`,
      }),
    tensor: TensorInputSchema.optional().openapi({
      description:
        'The same rows packed as float32: for wide rows at high rates, where parsing JSON numbers costs ' +
        'more than the inference. Give this or `requests`.',
    }),
    ...JobOptionsShape,
  })
  .refine((b) => (b.requests === undefined) !== (b.tensor === undefined), {
    message: 'give exactly one of requests and tensor',
    path: ['requests'],
  })
  .openapi('BatchPredictRequest', {
    example: {
      model: 'cars-mpg',
      requests: [{ features: [4, 140, 90, 2264, 15.5, 1971] }, { features: [8, 350, 165, 4200, 11, 1970] }],
    },
  });

export const BatchPredictResponseSchema = z
  .object({
    predictions: z.array(PredictionSchema).openapi({ description: 'One prediction per row, in request order.' }),
    total_latency_ms: z.number(),
    cached: z.boolean().openapi({ description: 'True when every row came from the result cache.' }),
    model_version: z.string(),
    job_id: z.string().nullable(),
  })
  .openapi('BatchPredictResponse', {
    example: {
      predictions: [24.8987865, 15.3701181],
      total_latency_ms: 4.1,
      cached: false,
      model_version: '1.0.0',
      job_id: 'job_yZ8rjvlKc3hyPghao8kFt9',
    },
  });

/**
 * The tutorial's `BatchPredictionResponse`, which its clients read: one `PredictionResponse` per
 * row (`cached` true where that row came from the result cache), and the total latency.
 */
export const LegacyBatchPredictResponseSchema = z
  .object({
    predictions: z
      .array(
        z.object({
          prediction: PredictionSchema,
          latency_ms: z.number().openapi({
            description: 'Server-side time from the request to this row’s answer (rows of one job answer together).',
          }),
          cached: z.boolean().openapi({ description: 'True when this row came from the result cache.' }),
          model_version: z.string(),
        }),
      )
      .openapi({ description: 'One prediction per row, in request order.' }),
    total_latency_ms: z.number(),
    job_id: z.string().nullable().openapi({ description: 'The job that computed the rows; null if all were cached.' }),
  })
  .openapi('LegacyBatchPredictResponse', {
    example: {
      predictions: [
        { prediction: 24.8987865, latency_ms: 4.1, cached: true, model_version: '1.0.0' },
        { prediction: 15.3701181, latency_ms: 4.1, cached: false, model_version: '1.0.0' },
      ],
      total_latency_ms: 4.1,
      job_id: 'job_yZ8rjvlKc3hyPghao8kFt9',
    },
  });

const route = <R extends z.ZodType>(path: string, deprecated: boolean, answer: R) => {
  // The tutorial's path answers with the tutorial's shape and RFC 9745 headers naming its successor.
  const aliasHeaders = deprecated ? deprecationHeaderShape('/v1/batch-predict') : {};
  return createRoute({
    method: 'post',
    operationId: deprecated ? 'batchPredictLegacy' : 'batchPredict',
    path,
    tags: ['Predict'],
    summary: deprecated ? 'Alias of POST /v1/batch-predict' : 'Predict many rows in one job and wait',
    description:
      'Up to 100 rows in one job, as JSON numbers (`requests`) or packed float32 (`tensor`); the worker splits ' +
      'them over batches as the model’s `max_batch_size` needs. ' +
      'Waits like `/v1/predict` and answers `202` with the job when the wait runs out.' +
      (deprecated
        ? ' The answer keeps the tutorial’s shape: one object per row (`prediction`, `latency_ms`, `cached`, ' +
          '`model_version`) and `total_latency_ms`.'
        : ''),
    deprecated,
    security: PROTECTED,
    middleware: deprecated
      ? ([deprecatedAlias('/v1/batch-predict'), requireAuth('predict', { deferRateLimit: true })] as const)
      : ([requireAuth('predict', { deferRateLimit: true })] as const),
    request: {
      headers: z.object({
        prefer: z.string().optional().openapi({ example: 'wait=10' }),
        'idempotency-key': z.string().max(255).optional().openapi({ example: 'batch-2291' }),
        'cancel-after': CancelAfterHeader,
      }),
      body: { required: true, content: { 'application/json': { schema: BatchPredictRequestSchema } } },
    },
    responses: {
      200: {
        description: 'All predictions.',
        ...(deprecated ? { headers: z.object(aliasHeaders) } : {}),
        content: { 'application/json': { schema: answer } },
      },
      202: {
        description: 'The wait ran out; the job goes on.',
        headers: z.object({ location: z.string(), ...aliasHeaders }),
        content: { 'application/json': { schema: JobSchema } },
      },
      ...problems(400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503, 504),
    },
  });
};

export const batchPredictRoute = route('/v1/batch-predict', false, BatchPredictResponseSchema);
export const batchPredictAliasRoute = route('/batch-predict', true, LegacyBatchPredictResponseSchema);

/** What a batch call ends with, before either route's shape is put on it. */
type BatchAnswer =
  | { kind: 'pending'; jobId: string; view: JobView }
  | {
      kind: 'done';
      model: ModelEntry;
      /** Each row's output and whether it came from the result cache. */
      rows: { output: number[]; cached: boolean }[];
      modelVersion: string;
      jobId: string | null;
      latencyMs: number;
    };

async function batchPredict(
  c: Context<AppEnv>,
  body: z.infer<typeof BatchPredictRequestSchema>,
  started: number,
): Promise<BatchAnswer> {
  const { models } = c.get('services');
  const model = models.resolve(body.model, c.get('principal').id);
  let input: RowMatrix;
  if (body.tensor) {
    input = tensorRows(model, body.tensor);
  } else {
    const json = (body.requests ?? []).map((r) => r.features);
    checkRows(model, json, (i) => `requests[${i}].features`);
    input = RowMatrix.fromRows(json);
  }
  const rows = input.rows();
  // Checked with the body, before anything is read, claimed or queued: a 422 changes nothing.
  const runTimeoutMs = cancelAfterMs(c);
  const { waitMs, useCache } = syncPreferences(c);
  // The rate-limit decision and the cache read share one round trip.
  const hits = await cachedRows(c, model, rows, useCache);
  const latencyMs = () => Math.round((performance.now() - started) * 1000) / 1000;
  if (useCache && hits.every((h) => h !== null)) {
    return {
      kind: 'done',
      model,
      rows: hits.map((h) => ({ output: h as number[], cached: true })),
      modelVersion: model.version,
      jobId: null,
      latencyMs: latencyMs(),
    };
  }

  const outcome = await runSync(c, {
    route: 'POST /v1/batch-predict',
    body,
    model,
    input,
    mode: 'batch',
    waitMs,
    cacheChecked: useCache,
    timeoutMs: body.timeout_ms,
    priority: body.priority,
    runTimeoutMs,
  });
  if (outcome.kind === 'pending') return { kind: 'pending', jobId: outcome.jobId, view: outcome.view };
  const { result } = outcome;
  // The job carries every row, hits included: a row the lookup found is answered from the cache.
  return {
    kind: 'done',
    model,
    rows: result.outputs.map((output, i) => {
      const hit = hits[i];
      return hit ? { output: hit, cached: true } : { output, cached: result.cached[i] ?? false };
    }),
    modelVersion: result.model_version,
    jobId: outcome.jobId,
    latencyMs: latencyMs(),
  };
}

export function registerBatchPredict(app: OpenAPIHono<AppEnv>): void {
  app.openapi(batchPredictRoute, async (c) => {
    const answer = await batchPredict(c, c.req.valid('json'), performance.now());
    if (answer.kind === 'pending') return c.json(answer.view, 202, { location: `/v1/jobs/${answer.jobId}` });
    return c.json(
      {
        predictions: answer.rows.map((r) => presentPrediction(answer.model, r.output)),
        total_latency_ms: answer.latencyMs,
        cached: answer.rows.every((r) => r.cached),
        model_version: answer.modelVersion,
        job_id: answer.jobId,
      },
      200,
    );
  });
  app.openapi(batchPredictAliasRoute, async (c) => {
    const answer = await batchPredict(c, c.req.valid('json'), performance.now());
    if (answer.kind === 'pending') return c.json(answer.view, 202, { location: `/v1/jobs/${answer.jobId}` });
    return c.json(
      {
        predictions: answer.rows.map((r) => ({
          prediction: presentPrediction(answer.model, r.output),
          latency_ms: answer.latencyMs,
          cached: r.cached,
          model_version: answer.modelVersion,
        })),
        total_latency_ms: answer.latencyMs,
        job_id: answer.jobId,
      },
      200,
    );
  });
}
