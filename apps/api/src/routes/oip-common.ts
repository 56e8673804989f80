import { z } from '@hono/zod-openapi';
import { type ModelEntry, modelRef, QuernError } from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';
import { ProblemSchema } from '../schemas';

/** What the `/v2` routes (Open Inference Protocol v2, KServe / Triton REST) share. */

export const OIP_TAG = 'Open Inference Protocol';

export const OipProblemSchema = ProblemSchema.extend({
  error: z.string().openapi({ description: 'The Open Inference Protocol’s error message (what tritonclient reads).' }),
}).openapi('OipProblem', {
  description: 'RFC 9457 problem details with the Open Inference Protocol’s `error` member.',
});

const OIP_ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'For `infer`: an input the model cannot take (name, datatype, shape, count, values) or a malformed body; elsewhere a path parameter over its length.',
  401: 'No credential, or one that is not valid.',
  403: 'The credential lacks the `predict` scope.',
  404: 'No such model, or no such version of it.',
  409: 'The job was canceled before it ran.',
  413: 'The request body (the binary part included) is larger than the configured limit.',
  415: 'A `Content-Encoding` other than identity.',
  429: 'Rate limit exceeded; see Retry-After.',
  500: 'The job failed, or an internal error occurred.',
  503: 'Redis is unreachable or the queue is full; see Retry-After.',
  504: 'The job was still queued at its deadline (`parameters.timeout`).',
};

/** The error responses of a `/v2` route, for its OpenAPI entry. */
export function oipErrors(...statuses: (keyof typeof OIP_ERROR_DESCRIPTIONS)[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      {
        description: OIP_ERROR_DESCRIPTIONS[status] ?? 'Error',
        content: { 'application/problem+json': { schema: OipProblemSchema } },
      },
    ]),
  );
}

const modelName = z
  .string()
  .max(63)
  .openapi({ param: { name: 'name', in: 'path' }, example: 'cars-mpg' });
const modelVersion = z
  .string()
  .max(64)
  .openapi({ param: { name: 'version', in: 'path' }, example: '1.0.0' });

export const OipModelParamsSchema = z.object({ name: modelName });
export const OipModelVersionParamsSchema = z.object({ name: modelName, version: modelVersion });

/**
 * The model version a `/v2/models/{name}[/versions/{version}]` path names, or a 404: the pinned
 * version when it is live (docs/model-versions.md), else the default one, or, for an inference
 * (`stickyKey`: the caller's principal), the one the model's canary weights give that caller.
 */
export function oipModel(
  c: Context<AppEnv>,
  params: { name: string; version?: string | undefined },
  stickyKey?: string,
): ModelEntry {
  const { models } = c.get('services');
  const model = models.find(params.name);
  if (!model) throw new QuernError('model_not_found', `no model named '${params.name}'; GET /v1/models lists them`);
  if (params.version !== undefined) {
    if (params.version === model.version) return model;
    const live = models.routing(params.name)?.versions[params.version]?.state === 'live';
    if (!live) {
      throw new QuernError(
        'model_not_found',
        `model '${model.name}' has no version '${params.version}' loaded; GET /v1/models/${model.name}/versions lists them`,
      );
    }
    return models.resolve(modelRef(params.name, params.version));
  }
  return stickyKey === undefined ? model : models.resolve(params.name, stickyKey);
}
