import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { registryFor } from '@quern/shared';
import type { AppEnv } from '../env';

export const metricsRoute = createRoute({
  operationId: 'getMetrics',
  security: [],
  method: 'get',
  path: '/metrics',
  tags: ['Operations'],
  summary: 'Prometheus metrics',
  description: 'Prometheus text format. Queue gauges are read from Redis at scrape time.',
  responses: {
    200: {
      description: 'Metrics.',
      content: {
        'text/plain': {
          schema: z.string().openapi({
            example:
              '# HELP quern_jobs_submitted_total Inference jobs enqueued, by model and mode (async, sync, batch).\n' +
              '# TYPE quern_jobs_submitted_total counter\n' +
              'quern_jobs_submitted_total{model="cars-mpg",mode="sync"} 42\n',
          }),
        },
      },
    },
  },
});

export function registerMetrics(app: OpenAPIHono<AppEnv>): void {
  app.openapi(metricsRoute, async (c) => {
    const { metrics } = c.get('services');
    try {
      await metrics.refreshQueueGauges();
    } catch (err) {
      // Redis down: still serve the process metrics; the queue gauges keep their last values.
      c.get('logger').warn({ err: (err as Error).message }, 'could not read queue gauges');
    }
    // OpenMetrics with exemplars for a scraper that asks for it (tracing on), else the text format.
    const registry = registryFor(metrics.registry, c.req.header('accept'));
    return c.text(await registry.metrics(), 200, { 'content-type': registry.contentType });
  });
}
