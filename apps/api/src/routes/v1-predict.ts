import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { presentPrediction, RowMatrix } from '@quern/shared';
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
import { checkRows } from './inference-input';
import { cachedRows, runSync, syncPreferences } from './sync-call';

export const PredictRequestSchema = z
  .object({ model: ModelNameSchema, features: FeaturesSchema, ...JobOptionsShape })
  .openapi('PredictRequest', { example: { model: 'cars-mpg', features: [4, 140, 90, 2264, 15.5, 1971] } });

export const PredictResponseSchema = z
  .object({
    prediction: PredictionSchema,
    latency_ms: z.number().openapi({ description: 'Server-side time from request to answer.' }),
    cached: z.boolean().openapi({ description: 'True when the answer came from the result cache.' }),
    model_version: z.string(),
    job_id: z.string().nullable().openapi({ description: 'The job that computed it; null for a cache hit.' }),
    job_row: z.number().int().optional().openapi({
      description:
        'Under load, concurrent sync calls of one principal and model share a job: the row of that job that was this call’s.',
    }),
  })
  .openapi('PredictResponse', {
    example: {
      prediction: 24.8987865,
      latency_ms: 3.412,
      cached: false,
      model_version: '1.0.0',
      job_id: 'job_8Zt0gkqNqk3v1sPzJmUoQa',
    },
  });

const route = (path: string, deprecated: boolean) => {
  // The tutorial's path answers as /v1/predict does, with RFC 9745 headers naming its successor.
  const aliasHeaders = deprecated ? deprecationHeaderShape('/v1/predict') : {};
  return createRoute({
    method: 'post',
    operationId: deprecated ? 'predictLegacy' : 'predict',
    path,
    tags: ['Predict'],
    summary: deprecated ? 'Alias of POST /v1/predict' : 'Predict and wait for the result',
    description:
      'Enqueues one row and waits for it (default 30 s; `Prefer: wait=N` in seconds, capped by the server). ' +
      'A cached input is answered at once without a job. When the wait runs out the answer is `202` with the ' +
      'job and its `Location`, so nothing is lost: poll it or stream its events.',
    deprecated,
    security: PROTECTED,
    middleware: deprecated
      ? ([deprecatedAlias('/v1/predict'), requireAuth('predict', { deferRateLimit: true })] as const)
      : ([requireAuth('predict', { deferRateLimit: true })] as const),
    request: {
      headers: z.object({
        prefer: z
          .string()
          .optional()
          .openapi({ example: 'wait=10', description: 'RFC 7240: `wait=N` seconds or `respond-async`.' }),
        'idempotency-key': z.string().max(255).optional().openapi({ example: 'order-8812-predict' }),
        'cancel-after': CancelAfterHeader,
      }),
      body: { required: true, content: { 'application/json': { schema: PredictRequestSchema } } },
    },
    responses: {
      200: {
        description: 'The prediction.',
        ...(deprecated ? { headers: z.object(aliasHeaders) } : {}),
        content: { 'application/json': { schema: PredictResponseSchema } },
      },
      202: {
        description:
          'The wait ran out; the job goes on. A call whose rows were in a job shared with other calls is ' +
          'given a job of its own here, so the job it polls ends as its own rows do; `Quern-Job-Row` says ' +
          'which row of the job is this call’s (0, unless that job could not be added: then the shared one).',
        headers: z.object({
          location: z.string().openapi({ example: '/v1/jobs/job_8Zt0gkqNqk3v1sPzJmUoQa' }),
          'quern-job-row': z.string().openapi({ example: '0' }),
          ...aliasHeaders,
        }),
        content: { 'application/json': { schema: JobSchema } },
      },
      ...problems(400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503, 504),
    },
  });
};

export const predictRoute = route('/v1/predict', false);
export const predictAliasRoute = route('/predict', true);

export function registerPredict(app: OpenAPIHono<AppEnv>): void {
  for (const r of [predictRoute, predictAliasRoute]) {
    app.openapi(r, async (c) => {
      const started = performance.now();
      const { models } = c.get('services');
      const body = c.req.valid('json');
      const model = models.resolve(body.model, c.get('principal').id);
      checkRows(model, [body.features], () => 'features');
      // Checked with the body, before anything is read, claimed or queued: a 422 changes nothing.
      const runTimeoutMs = cancelAfterMs(c);
      const { waitMs, useCache } = syncPreferences(c);
      // The rate-limit decision and the cache read share one round trip.
      const [hit] = await cachedRows(c, model, [body.features], useCache);
      const latency = () => Math.round((performance.now() - started) * 1000) / 1000;
      if (hit) {
        return c.json(
          {
            prediction: presentPrediction(model, hit),
            latency_ms: latency(),
            cached: true,
            model_version: model.version,
            job_id: null,
          },
          200,
        );
      }
      const outcome = await runSync(c, {
        route: 'POST /v1/predict',
        body,
        model,
        input: RowMatrix.fromRows([body.features]),
        mode: 'sync',
        waitMs,
        cacheChecked: useCache,
        timeoutMs: body.timeout_ms,
        priority: body.priority,
        runTimeoutMs,
      });
      if (outcome.kind === 'pending') {
        return c.json(outcome.view, 202, {
          location: `/v1/jobs/${outcome.jobId}`,
          'quern-job-row': String(outcome.row),
        });
      }
      const { result, row } = outcome;
      return c.json(
        {
          prediction: presentPrediction(model, result.outputs[row] ?? []),
          latency_ms: latency(),
          cached: result.cached[row] ?? false,
          model_version: result.model_version,
          job_id: outcome.jobId,
          job_row: row,
        },
        200,
      );
    });
  }
}
