import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { jobView, RowMatrix } from '@quern/shared';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import {
  FeaturesSchema,
  JobOptionsShape,
  JobSchema,
  ModelNameSchema,
  PROTECTED,
  problems,
  WebhookRequestSchema,
} from '../schemas';
import { findClaimedJob } from '../services/idempotency';
import { CancelAfterHeader, cancelAfterMs } from './cancel-after';
import { checkRows } from './inference-input';
import { claimJob, validateWebhook } from './submission';

export const CreateJobRequestSchema = z
  .object({
    model: ModelNameSchema,
    features: FeaturesSchema,
    webhook: WebhookRequestSchema.optional(),
    ...JobOptionsShape,
  })
  .openapi('CreateJobRequest', {
    example: {
      model: 'cars-mpg',
      features: [4, 140, 90, 2264, 15.5, 1971],
      webhook: { url: 'https://example.com/hooks/quern', events: ['completed', 'failed'] },
      timeout_ms: 60_000,
    },
  });

/** The operations on a job, given its id from the answer's body. */
function jobLinks(suffix: '' | 'Unversioned') {
  const id = { id: '$response.body#/id' };
  return {
    GetJob: { operationId: `getJob${suffix}`, parameters: id, description: 'Poll the job.' },
    StreamJobEvents: { operationId: `streamJobEvents${suffix}`, parameters: id, description: 'Stream its states.' },
    CancelJob: { operationId: `cancelJob${suffix}`, parameters: id, description: 'Cancel it.' },
  };
}

/** `/v1/jobs`, and `/jobs`: the paths the service was specified with, part of the contract (not deprecated). */
const route = (prefix: '/v1' | '') =>
  createRoute({
    operationId: prefix ? 'createJob' : 'createJobUnversioned',
    method: 'post',
    path: `${prefix}/jobs`,
    tags: ['Jobs'],
    summary: prefix ? 'Submit an inference job' : 'Submit an inference job (unversioned path)',
    description:
      'Enqueues one row and answers at once with the job; poll `Location`, stream `/v1/jobs/{id}/events`, or ' +
      'ask for a signed webhook. With `Idempotency-Key`, a retry of the same request within 24 h returns the ' +
      'same job (`Idempotent-Replayed: true`); the same key with another body is a 422.',
    security: PROTECTED,
    middleware: [requireAuth('predict')] as const,
    request: {
      headers: z.object({
        'idempotency-key': z.string().max(255).optional().openapi({ example: 'order-8812-predict' }),
        'cancel-after': CancelAfterHeader,
      }),
      body: { required: true, content: { 'application/json': { schema: CreateJobRequestSchema } } },
    },
    responses: {
      202: {
        description: 'Accepted: the job is queued (or, for a replayed Idempotency-Key, the original job).',
        headers: z.object({ location: z.string().openapi({ example: '/v1/jobs/job_8Zt0gkqNqk3v1sPzJmUoQa' }) }),
        content: { 'application/json': { schema: JobSchema } },
        // What a client does next with the job, as OpenAPI links (tools such as schemathesis follow them).
        links: jobLinks(prefix ? '' : 'Unversioned'),
      },
      ...problems(400, 401, 403, 404, 413, 415, 422, 429, 503),
    },
  });

export const createJobRoute = route('/v1');
export const createJobUnversionedRoute = route('');

export function registerCreateJob(app: OpenAPIHono<AppEnv>): void {
  for (const r of [createJobRoute, createJobUnversionedRoute]) {
    app.openapi(r, async (c) => {
      const { models, jobs, metrics } = c.get('services');
      const body = c.req.valid('json');
      const model = models.resolve(body.model, c.get('principal').id);
      checkRows(model, [body.features], () => 'features');
      const runTimeoutMs = cancelAfterMs(c);
      const webhook = await validateWebhook(c, body.webhook);
      const claim = await claimJob(c, 'POST /v1/jobs', body, model);
      const principal = c.get('principal');
      const submit = () =>
        jobs.submit({
          model,
          input: RowMatrix.fromRows([body.features]),
          mode: 'async',
          principal,
          requestId: c.get('requestId'),
          jobId: claim.jobId,
          timeoutMs: body.timeout_ms,
          priority: body.priority,
          webhook,
          runTimeoutMs,
          traceParent: c.get('traceContext'),
        });
      if (claim.replayed) {
        const found = await findClaimedJob(jobs, principal.id, claim.claim, submit);
        return c.json(await jobs.view(found), 202, { location: `/v1/jobs/${claim.jobId}` });
      }
      // A failed add is not released: a timeout does not say the job was not added; the claim
      // expires in 60 s, and a retry takes it over (same job id) 2 s after it was made.
      const { id, data } = await submit();
      await claim
        .confirm()
        .catch((err: Error) => c.get('logger').warn({ err: err.message }, 'idempotency record not confirmed'));
      metrics.jobsSubmitted.labels(model.name, 'async').inc();
      const view = jobView({ id, data, state: 'waiting', timestamp: data.created_at }, model);
      return c.json(view, 202, { location: `/v1/jobs/${id}` });
    });
  }
}
