import { z } from '@hono/zod-openapi';

export const UsageQuerySchema = z.object({
  hours: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 400)
    .default(24)
    .openapi({
      param: { name: 'hours', in: 'query' },
      example: 24,
      description: 'Hours to show, the current one included (at most `QUERN_USAGE_RETENTION_DAYS` × 24 have data).',
    }),
});

const UsageHourSchema = z.object({
  hour: z.string().openapi({ format: 'date-time', description: 'Start of the hour.' }),
  jobs: z.number().int().openapi({ description: 'Jobs that succeeded.' }),
  rows: z.number().int().openapi({ description: 'Their rows (answered from the cache included).' }),
  inference_ms: z.number().openapi({ description: 'Their share of the inference time of the batches they ran in.' }),
  failed_jobs: z.number().int().openapi({ description: 'Jobs that failed, expired or were canceled in a worker.' }),
});

export const UsageSchema = z
  .object({
    key_id: z.string(),
    hours: z.array(UsageHourSchema).openapi({ description: 'One entry per hour, oldest first.' }),
    total: UsageHourSchema.omit({ hour: true }),
  })
  .openapi('Usage', {
    example: {
      key_id: 'key_3n9Vd0tqZyXbL2m8Qe4RkA',
      hours: [{ hour: '2026-11-30T10:00:00.000Z', jobs: 120, rows: 480, inference_ms: 9.6, failed_jobs: 1 }],
      total: { jobs: 120, rows: 480, inference_ms: 9.6, failed_jobs: 1 },
    },
  });

type UsageHour = z.infer<typeof UsageHourSchema>;

/** The usage resource of one key: its hours and their sum. */
export function usageView(keyId: string, hours: UsageHour[]): z.infer<typeof UsageSchema> {
  const total = { jobs: 0, rows: 0, inference_ms: 0, failed_jobs: 0 };
  for (const h of hours) {
    total.jobs += h.jobs;
    total.rows += h.rows;
    total.inference_ms += h.inference_ms;
    total.failed_jobs += h.failed_jobs;
  }
  total.inference_ms = Math.round(total.inference_ms * 1000) / 1000;
  return { key_id: keyId, hours, total };
}
