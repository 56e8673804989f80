import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { JobSchema, OipInferenceResponseSchema, PROTECTED } from '../schemas';
import { decodeInferRequest, encodeInferResponse, OipInferenceRequestSchema } from './oip-codec';
import { OIP_TAG, OipModelParamsSchema, OipModelVersionParamsSchema, oipErrors, oipModel } from './oip-common';
import { cachedRows, runSync, syncPreferences } from './sync-call';

const BINARY_BODY = {
  schema: {
    type: 'string' as const,
    format: 'binary',
    description:
      'Binary tensor extension: the JSON inference request (`Inference-Header-Content-Length` bytes), then the ' +
      'bytes of each input that gives `parameters.binary_data_size`, little-endian, in the order of `inputs`.',
  },
};

const route = (versioned: boolean) =>
  createRoute({
    operationId: versioned ? 'oipModelVersionInfer' : 'oipModelInfer',
    method: 'post',
    path: versioned ? '/v2/models/{name}/versions/{version}/infer' : '/v2/models/{name}/infer',
    tags: [OIP_TAG],
    summary: versioned ? 'Infer with a model version (OIP v2)' : 'Infer (OIP v2)',
    description:
      'The Open Inference Protocol’s inference request, over Quern’s queue: the rows become a job (sharing ' +
      'jobs and batches with other calls as `/v1/predict` does) and the call waits for it (30 s by default, ' +
      '`Prefer: wait=N`). JSON, or the binary tensor extension (`Inference-Header-Content-Length`; any ' +
      'content type, e.g. `application/octet-stream`); the body limit counts the binary part. Outputs come ' +
      'back as JSON, or as bytes with `binary_data` / `binary_data_output`. `parameters.priority` and ' +
      '`parameters.timeout` (µs) map to Quern’s priority and deadline. With `Prefer: respond-async` (or when ' +
      'the wait runs out) the answer is `202` with the job and its `Location`; the job’s `output` is then an ' +
      'OIP inference response. An input the model cannot take is a 400 with `error`.',
    security: PROTECTED,
    middleware: [requireAuth('predict', { deferRateLimit: true })] as const,
    request: {
      params: versioned ? OipModelVersionParamsSchema : OipModelParamsSchema,
      headers: z.object({
        'inference-header-content-length': z
          .string()
          .optional()
          .openapi({ description: 'Binary tensor extension: length of the JSON header.', example: '132' }),
        prefer: z
          .string()
          .optional()
          .openapi({ example: 'respond-async', description: 'RFC 7240: `wait=N` seconds or `respond-async`.' }),
        'idempotency-key': z.string().max(255).optional().openapi({ example: 'order-8812-infer' }),
      }),
      // Documented, not validated here: the body may be binary (read and checked by the codec).
      body: {
        required: true,
        content: {
          'application/json': { schema: { $ref: '#/components/schemas/OipInferenceRequest' } },
          'application/octet-stream': BINARY_BODY,
        },
      },
    },
    responses: {
      200: {
        description:
          'The inference response: JSON, or (with binary outputs) the JSON header of ' +
          '`Inference-Header-Content-Length` bytes followed by the outputs’ bytes.',
        headers: z.object({
          'inference-header-content-length': z
            .string()
            .optional()
            .openapi({ description: 'Present with binary outputs: length of the JSON header.' }),
        }),
        content: {
          'application/json': { schema: OipInferenceResponseSchema },
          'application/octet-stream': {
            schema: { type: 'string' as const, format: 'binary' },
          },
        },
      },
      202: {
        description:
          'Asked with `Prefer: respond-async`, or the wait ran out: the job goes on; poll its `Location`. Its ' +
          '`output`, once it succeeded, is the OIP inference response (JSON). `Quern-Job-Row` is this call’s ' +
          'first row in the job.',
        headers: z.object({
          location: z.string().openapi({ example: '/v1/jobs/job_8Zt0gkqNqk3v1sPzJmUoQa' }),
          'quern-job-row': z.string().openapi({ example: '0' }),
        }),
        content: { 'application/json': { schema: JobSchema } },
      },
      ...oipErrors(400, 401, 403, 404, 409, 413, 415, 429, 500, 503, 504),
    },
  });

export const oipInferRoute = route(false);
export const oipVersionInferRoute = route(true);

export function registerOipInfer(app: OpenAPIHono<AppEnv>): void {
  app.openAPIRegistry.register('OipInferenceRequest', OipInferenceRequestSchema);
  for (const r of [oipInferRoute, oipVersionInferRoute]) {
    app.openapi(r, async (c) => {
      // Unpinned, the model's canary weights pick the version for this caller.
      const model = oipModel(c, c.req.valid('param'), c.get('principal').id);
      const encoding = c.req.header('content-encoding');
      if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
        throw new QuernError(
          'unsupported_media_type',
          `Content-Encoding ${encoding} is not supported; send the body as is`,
        );
      }
      const raw = new Uint8Array(await c.req.arrayBuffer());
      const request = decodeInferRequest(model, raw, c.req.header('inference-header-content-length'));
      const { input } = request;
      const rows = input.rows();
      const { waitMs, useCache } = syncPreferences(c);
      // The rate-limit decision and the cache read share one round trip.
      const hits = await cachedRows(c, model, rows, useCache);
      let outputs: number[][];
      let jobId: string | undefined;
      let modelVersion = model.version;
      if (useCache && hits.every((h) => h !== null)) {
        outputs = hits as number[][];
      } else {
        const idempotent = c.req.header('idempotency-key') !== undefined;
        const outcome = await runSync(c, {
          route: `POST /v2/models/${model.name}/infer`,
          // What an Idempotency-Key's record compares: the decoded request, binary or not.
          body: idempotent ? { id: request.id, rows: input.toBase64(), binary: request.binaryOutput } : null,
          model,
          input,
          mode: 'sync',
          waitMs,
          cacheChecked: useCache,
          timeoutMs: request.timeoutMs,
          priority: request.priority,
          oip: request.id === undefined ? {} : { id: request.id },
        });
        if (outcome.kind === 'pending') {
          return c.json(outcome.view, 202, {
            location: `/v1/jobs/${outcome.jobId}`,
            'quern-job-row': String(outcome.row),
          });
        }
        jobId = outcome.jobId;
        modelVersion = outcome.result.model_version;
        const mine = outcome.result.outputs.slice(outcome.row, outcome.row + input.count);
        // The job carries every row, hits included: a row the lookup found is answered from the cache.
        outputs = mine.map((output, i) => hits[i] ?? output);
      }
      const encoded = encodeInferResponse(
        model,
        modelVersion,
        outputs,
        request,
        jobId === undefined ? undefined : { quern_job_id: jobId },
      );
      if (encoded.kind === 'json') return c.json(encoded.response, 200);
      return c.body(encoded.body, 200, {
        'content-type': 'application/octet-stream',
        'inference-header-content-length': String(encoded.headerLength),
      });
    });
  }
}
