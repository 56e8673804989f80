import { z } from '@hono/zod-openapi';
import { checkFeatureRow, type ErrorCode, ErrorCodes, MAX_FEATURES, WEBHOOK_EVENTS } from '@quern/shared';

/** OpenAPI schemas shared by several routes. JSON fields are snake_case throughout. */

export const ProblemSchema = z
  .object({
    type: z.string().openapi({ example: 'urn:quern:problem:validation_failed' }),
    title: z.string().openapi({ example: 'Validation failed' }),
    status: z.number().int().openapi({ example: 422 }),
    detail: z.string().openapi({ example: 'features: expected 6 features for model cars-mpg, got 5' }),
    // An enum in the document, so generated clients (packages/client) can switch on it.
    code: z
      .enum(Object.keys(ErrorCodes) as [ErrorCode, ...ErrorCode[]])
      .openapi({ example: 'validation_failed', description: 'Stable: switch on it, never on `detail`.' }),
    request_id: z.string().nullable().openapi({ example: 'req_4CwVw1bq5pRrYd2KX8h0aF' }),
    errors: z
      .array(z.object({ field: z.string(), message: z.string() }))
      .optional()
      .openapi({ description: 'Present for validation errors: every field to fix.' }),
    job_id: z.string().optional().openapi({ description: 'The job concerned, when there is one.' }),
  })
  .openapi('Problem', { description: 'RFC 9457 problem details.' });

/** Checked by a loop (see checkFeatureRow), documented as what it is: an array of numbers. */
export const FeaturesSchema = z
  .custom<number[]>(() => true)
  .superRefine(checkFeatureRow)
  .openapi({
    type: 'array',
    items: { type: 'number' },
    minItems: 1,
    maxItems: MAX_FEATURES,
    description: 'One input row: exactly as many finite numbers as the model declares (`GET /v1/models/{name}`).',
    example: [4, 140, 90, 2264, 15.5, 1971],
  });

export const ModelNameSchema = z
  .string()
  .max(128)
  .optional()
  .openapi({
    description:
      'Model name, or `name@version` to pin one live version; the default model when omitted. Unpinned, the ' +
      'model’s canary weights pick the version, the same one for the same caller.',
    example: 'cars-mpg',
  });

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

export const DeliverySchema = z
  .object({
    event: z.enum(WEBHOOK_EVENTS),
    status: z.enum(['pending', 'delivered', 'retrying', 'failed', 'gone']),
    attempts: z.number().int(),
    last_status_code: z.number().int().nullable(),
    next_attempt_at: z.string().nullable().openapi({ format: 'date-time' }),
    updated_at: z.string().openapi({ format: 'date-time' }),
  })
  .openapi('WebhookDelivery');

export const WebhookStateSchema = z
  .object({
    url: z.string(),
    events: z.array(z.string()),
    status: DeliverySchema.shape.status.nullable().openapi({ description: 'State of the latest event’s delivery.' }),
    attempts: z.number().int(),
    last_status_code: z.number().int().nullable(),
    next_attempt_at: z.string().nullable().openapi({ format: 'date-time' }),
    deliveries: z.array(DeliverySchema),
  })
  .openapi('JobWebhook');

/** Options every job-creating request takes. */
export const JobOptionsShape = {
  timeout_ms: z
    .number()
    .int()
    .min(1)
    .optional()
    .openapi({ description: 'Deadline in ms from now (default and maximum from the server).', example: 60_000 }),
  priority: z.number().int().min(1).max(100).optional().openapi({
    description:
      'Priority class, 1 the highest; never above your tier’s (premium 1, free 5). Within a class, keys take turns.',
    example: 5,
  }),
};

export const WebhookRequestSchema = z
  .object({
    url: z.string().max(2048).openapi({ example: 'https://example.com/hooks/quern' }),
    events: z
      .array(z.enum(WEBHOOK_EVENTS))
      .min(1)
      .optional()
      .openapi({ description: 'Default: completed and failed.', example: ['completed', 'failed'] }),
  })
  .openapi('WebhookRequest');

export const JobStatusSchema = z
  .enum(['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'])
  .openapi('JobStatus');

const OipParameterValue = z.union([z.string(), z.number(), z.boolean()]);
export const OipParametersSchema = z
  .record(z.string(), OipParameterValue)
  .openapi('OipParameters', { description: 'Extra parameters: string, number or boolean values.' });

/** The Open Inference Protocol's inference response (`/v2/.../infer`, and the output of a job made there). */
export const OipResponseOutputSchema = z
  .object({
    name: z.string(),
    datatype: z.string(),
    shape: z.array(z.number().int()),
    parameters: OipParametersSchema.optional(),
    data: z.array(z.number()).optional().openapi({ description: 'Absent when the output is sent as bytes.' }),
  })
  .openapi('OipResponseOutput');

export const OipInferenceResponseSchema = z
  .object({
    model_name: z.string(),
    model_version: z.string(),
    id: z.string().optional(),
    parameters: OipParametersSchema.optional(),
    outputs: z.array(OipResponseOutputSchema),
  })
  .openapi('OipInferenceResponse', {
    example: {
      model_name: 'cars-mpg',
      model_version: '1.0.0',
      id: 'req-42',
      outputs: [{ name: 'mpg', datatype: 'FP32', shape: [1, 1], data: [24.8987865] }],
    },
  });

export const JobSchema = z
  .object({
    id: z.string().openapi({ example: 'job_8Zt0gkqNqk3v1sPzJmUoQa' }),
    status: JobStatusSchema,
    model: z.string().openapi({ example: 'cars-mpg' }),
    model_version: z.string().openapi({ example: '1.0.0' }),
    created_at: z.string().openapi({ format: 'date-time' }),
    started_at: z
      .string()
      .nullable()
      .openapi({
        format: 'date-time',
        description:
          'When a worker took the job (it is `running` from then on); the same in every view once set. Its batch ' +
          'began computing at `created_at` + `timings.queue_ms`. Null until then, and for a job that never ran.',
      }),
    completed_at: z.string().nullable().openapi({ format: 'date-time' }),
    output: z
      .union([
        z.object({ prediction: PredictionSchema }),
        z.object({ predictions: z.array(PredictionSchema) }),
        OipInferenceResponseSchema,
      ])
      .nullable()
      .openapi({ description: 'A job made through `/v2/.../infer` holds an OIP inference response.' }),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    timings: TimingsSchema.nullable(),
    expires_at: z
      .string()
      .openapi({ format: 'date-time', description: 'Deadline: a job still queued then is not computed.' }),
    priority: z.number().int().openapi({
      description:
        'Priority class it was queued with (1 is the highest); keys of one class share the queue fairly (docs/scheduling.md).',
    }),
    webhook: WebhookStateSchema.nullable(),
    queue: z
      .object({
        position: z.number().int().openapi({
          description: 'Jobs a worker will take before this one (at most: it never rises).',
        }),
        ahead_rows: z
          .number()
          .int()
          .openapi({ description: 'Rows of those jobs (estimated from the mean rows of recent jobs).' }),
        eta_ms: z
          .number()
          .int()
          .nullable()
          .openapi({
            description:
              'Expected time until a worker takes it, at the drain rate of the last minute; null before any drained. ' +
              'It counts down; 0 while still queued means the job is late.',
          }),
      })
      .nullable()
      .optional()
      .openapi({
        description:
          'While queued, on `GET /v1/jobs/{id}` and the event stream: where the job stands. Estimates that never ' +
          'rise over the job’s successive reads: a job placed ahead (fair share, a higher class) holds the ' +
          'position rather than raising it, and a slower drain lets `eta_ms` reach 0 (docs/scheduling.md).',
      }),
  })
  .openapi('Job', {
    example: {
      id: 'job_8Zt0gkqNqk3v1sPzJmUoQa',
      status: 'succeeded',
      model: 'cars-mpg',
      model_version: '1.0.0',
      created_at: '2026-11-30T10:00:00.000Z',
      started_at: '2026-11-30T10:00:00.007Z',
      completed_at: '2026-11-30T10:00:00.009Z',
      output: { prediction: 24.8987865 },
      error: null,
      timings: { queue_ms: 7, inference_ms: 0.496, batch_size: 1 },
      expires_at: '2026-11-30T10:10:00.000Z',
      priority: 1,
      webhook: null,
    },
  });

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
  409: 'The job is in a state that does not allow this (finished, or its batch already started).',
  413: 'The request body is larger than the configured limit.',
  415: 'The body is not sent as application/json.',
  422: 'The body is well-formed but not valid: `errors` lists each field.',
  429: 'Rate limit exceeded; see Retry-After.',
  500: 'The job failed, or an internal error occurred.',
  503: 'Redis is unreachable, the queue is full, or an idempotent replay is still being created; see Retry-After.',
  504: 'The job was still queued at its deadline (`timeout_ms`).',
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
