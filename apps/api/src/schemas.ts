import { z } from '@hono/zod-openapi';
import { Feature } from '@quern/shared';

/** OpenAPI schemas shared by several routes. JSON fields are snake_case throughout. */

export const ProblemSchema = z
  .object({
    type: z.string().openapi({ example: 'urn:quern:problem:validation_failed' }),
    title: z.string().openapi({ example: 'Validation failed' }),
    status: z.number().int().openapi({ example: 422 }),
    detail: z.string().openapi({ example: 'features: expected 6 features for model cars-mpg, got 5' }),
    code: z.string().openapi({ example: 'validation_failed' }),
    request_id: z.string().nullable().openapi({ example: 'req_4CwVw1bq5pRrYd2KX8h0aF' }),
    errors: z
      .array(z.object({ field: z.string(), message: z.string() }))
      .optional()
      .openapi({ description: 'Present for validation errors: every field to fix.' }),
    job_id: z.string().optional().openapi({ description: 'The job concerned, when there is one.' }),
  })
  .openapi('Problem', { description: 'RFC 9457 problem details.' });

export const FeaturesSchema = z
  .array(Feature)
  .min(1)
  .max(65_536)
  .openapi({
    description: 'One input row: exactly as many finite numbers as the model declares (`GET /v1/models/{name}`).',
    example: [4, 140, 90, 2264, 15.5, 1971],
  });

export const ModelNameSchema = z
  .string()
  .max(63)
  .optional()
  .openapi({ description: 'Model name; the default model when omitted.', example: 'cars-mpg' });

export const PredictionSchema = z
  .union([z.number(), z.array(z.number())])
  .openapi('Prediction', { description: 'A number for single-output models, else an array.', example: 24.1 });

export const TimingsSchema = z
  .object({
    queue_ms: z.number().openapi({ description: 'From enqueue to the start of the job’s batch.' }),
    inference_ms: z.number().openapi({ description: 'Time inside ONNX Runtime for the job’s batch(es).' }),
    batch_size: z.number().int().openapi({ description: 'Rows in the batch the job ran in (0 if fully cached).' }),
  })
  .openapi('Timings');

export const JobStatusSchema = z
  .enum(['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'])
  .openapi('JobStatus');

export const JobSchema = z
  .object({
    id: z.string().openapi({ example: 'job_8Zt0gkqNqk3v1sPzJmUoQa' }),
    status: JobStatusSchema,
    model: z.string().openapi({ example: 'cars-mpg' }),
    model_version: z.string().openapi({ example: '1.0.0' }),
    created_at: z.string().openapi({ format: 'date-time' }),
    started_at: z.string().nullable().openapi({ format: 'date-time' }),
    completed_at: z.string().nullable().openapi({ format: 'date-time' }),
    output: z
      .union([z.object({ prediction: PredictionSchema }), z.object({ predictions: z.array(PredictionSchema) })])
      .nullable(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    timings: TimingsSchema.nullable(),
  })
  .openapi('Job');

export const ModelSchema = z
  .object({
    name: z.string().openapi({ example: 'cars-mpg' }),
    version: z.string().openapi({ example: '1.0.0' }),
    description: z.string(),
    input: z.object({
      name: z.string(),
      features: z.number().int(),
      feature_names: z.array(z.string()).optional(),
    }),
    output: z.object({ name: z.string(), shape: z.array(z.number().int()) }),
    batching: z.object({ max_batch_size: z.number().int(), max_delay_ms: z.number().int() }),
    default: z.boolean(),
  })
  .openapi('Model');

const problemContent = { 'application/problem+json': { schema: ProblemSchema } };

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: 'Malformed request (the body is not valid JSON).',
  401: 'No credential, or one that is not valid.',
  403: 'The credential lacks the scope this operation needs.',
  404: 'No such resource (or it belongs to someone else).',
  409: 'The resource is in a state that does not allow this.',
  413: 'The request body is larger than the configured limit.',
  415: 'The body is not sent as application/json.',
  422: 'The body is well-formed but not valid: `errors` lists each field.',
  429: 'Rate limit exceeded; see Retry-After.',
  500: 'The job failed, or an internal error occurred.',
  503: 'Redis is unreachable or the queue is full; see Retry-After.',
};

/** The problem+json responses a route can give, for its OpenAPI entry. */
export function problems(...statuses: (keyof typeof PROBLEM_DESCRIPTIONS)[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      { description: PROBLEM_DESCRIPTIONS[status] ?? 'Error', content: problemContent },
    ]),
  );
}

/** Security requirement of a protected route: an API key (header) or a bearer credential. */
export const PROTECTED: Record<string, string[]>[] = [{ ApiKeyAuth: [] }, { BearerAuth: [] }];
