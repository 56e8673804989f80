import { z } from '@hono/zod-openapi';

/** A version as `GET /v1/models/{name}/versions/{version}` shows it, for the OpenAPI examples. */
export const MODEL_VERSION_EXAMPLE = {
  name: 'cars-mpg',
  version: '2.0.0',
  state: 'shadow',
  default: false,
  weight: 0,
  sample: 0.1,
  shadow: { rows: 1840, max_abs_diff: 1.93, mean_abs_diff: 0.41 },
};

export const ModelVersionSchema = z
  .object({
    name: z.string(),
    version: z.string(),
    state: z.enum(['live', 'shadow', 'draining', 'available']).openapi({
      description:
        '`live`: takes its weight of unpinned requests and pinned ones (`name@version`); `shadow`: runs a sample ' +
        'of the default version’s rows after they are answered, to compare; `draining`: takes no new jobs, ' +
        'released once its queued ones are done; `available`: in the manifest, not loaded.',
    }),
    default: z
      .boolean()
      .openapi({ description: 'The version unpinned requests get unless a canary weight picks another.' }),
    weight: z.number().openapi({
      description: 'Percent of unpinned requests it gets now; the default version gets what the canaries leave.',
    }),
    sample: z.number().optional().openapi({ description: 'Shadow versions: the fraction of live jobs it also runs.' }),
    drain_until: z
      .string()
      .optional()
      .openapi({ format: 'date-time', description: 'Draining versions: when the last queued job can have run.' }),
    shadow: z
      .object({
        rows: z.number().int().openapi({ description: 'Rows compared so far.' }),
        max_abs_diff: z.number().openapi({ description: 'Largest absolute difference of any output value.' }),
        mean_abs_diff: z
          .number()
          .openapi({ description: 'Mean over the rows of each row’s mean absolute difference.' }),
      })
      .optional()
      .openapi({ description: 'How far its outputs were from the default version’s on the same rows.' }),
  })
  .openapi('ModelVersion', { example: MODEL_VERSION_EXAMPLE });

export const ModelVersionListSchema = z
  .object({ data: z.array(ModelVersionSchema) })
  .openapi('ModelVersionList', { example: { data: [MODEL_VERSION_EXAMPLE] } });

export const ModelNameParam = z
  .string()
  .max(63)
  .openapi({ param: { name: 'name', in: 'path' }, example: 'cars-mpg' });

export const VersionParam = z
  .string()
  .max(64)
  .openapi({ param: { name: 'version', in: 'path' }, example: '2.0.0' });
