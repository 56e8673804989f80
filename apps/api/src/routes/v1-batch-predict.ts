import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { presentPrediction, RowMatrix } from '@quern/shared';
import type { AppEnv } from '../env';
import { admitted, requireAuth } from '../middleware/auth';
import {
  FeaturesSchema,
  JobOptionsShape,
  JobSchema,
  ModelNameSchema,
  PROTECTED,
  PredictionSchema,
  problems,
} from '../schemas';
import { checkRows, MAX_BATCH_ROWS, TensorInputSchema, tensorRows } from './inference-input';
import { runSync, syncPreferences } from './sync-call';

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

const route = (path: string, deprecated: boolean) =>
  createRoute({
    method: 'post',
    operationId: deprecated ? 'batchPredictLegacy' : 'batchPredict',
    path,
    tags: ['Predict'],
    summary: deprecated ? 'Alias of POST /v1/batch-predict' : 'Predict many rows in one job and wait',
    description:
      'Up to 100 rows in one job, as JSON numbers (`requests`) or packed float32 (`tensor`); the worker splits ' +
      'them over batches as the model’s `max_batch_size` needs. ' +
      'Waits like `/v1/predict` and answers `202` with the job when the wait runs out.',
    deprecated,
    security: PROTECTED,
    middleware: [requireAuth('predict', { deferRateLimit: true })] as const,
    request: {
      headers: z.object({
        prefer: z.string().optional().openapi({ example: 'wait=10' }),
        'idempotency-key': z.string().max(255).optional().openapi({ example: 'batch-2291' }),
      }),
      body: { required: true, content: { 'application/json': { schema: BatchPredictRequestSchema } } },
    },
    responses: {
      200: { description: 'All predictions.', content: { 'application/json': { schema: BatchPredictResponseSchema } } },
      202: {
        description: 'The wait ran out; the job goes on.',
        headers: z.object({ location: z.string() }),
        content: { 'application/json': { schema: JobSchema } },
      },
      ...problems(400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503, 504),
    },
  });

export const batchPredictRoute = route('/v1/batch-predict', false);
export const batchPredictAliasRoute = route('/batch-predict', true);

export function registerBatchPredict(app: OpenAPIHono<AppEnv>): void {
  for (const r of [batchPredictRoute, batchPredictAliasRoute]) {
    app.openapi(r, async (c) => {
      const started = performance.now();
      const { models, cache, metrics } = c.get('services');
      const body = c.req.valid('json');
      const model = models.resolve(body.model);
      let input: RowMatrix;
      if (body.tensor) {
        input = tensorRows(model, body.tensor);
      } else {
        const json = (body.requests ?? []).map((r) => r.features);
        checkRows(model, json, (i) => `requests[${i}].features`);
        input = RowMatrix.fromRows(json);
      }
      const rows = input.rows();
      const { waitMs, useCache } = syncPreferences(c);
      // The rate-limit decision and the cache read share one round trip.
      const hits = await admitted(c, useCache ? cache.lookup(model, rows) : Promise.resolve(rows.map(() => null)));
      if (useCache) {
        const hitCount = hits.filter((h) => h !== null).length;
        metrics.cacheLookups.labels(model.name, 'hit').inc(hitCount);
        metrics.cacheLookups.labels(model.name, 'miss').inc(rows.length - hitCount);
      }
      if (useCache && hits.every((h) => h !== null)) {
        return c.json(
          {
            predictions: hits.map((h) => presentPrediction(model, h as number[])),
            total_latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
            cached: true,
            model_version: model.version,
            job_id: null,
          },
          200,
        );
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
      });
      if (outcome.kind === 'pending') {
        return c.json(outcome.view, 202, { location: `/v1/jobs/${outcome.jobId}` });
      }
      const { result } = outcome;
      return c.json(
        {
          predictions: result.outputs.map((o) => presentPrediction(model, o)),
          total_latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
          cached: result.cached.every(Boolean),
          model_version: result.model_version,
          job_id: outcome.jobId,
        },
        200,
      );
    });
  }
}
