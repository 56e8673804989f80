import { serve } from '@hono/node-server';
import { type MetricsRegistry, registryFor } from '@quern/shared';
import { Hono } from 'hono';

/**
 * The worker's own small HTTP port: `/metrics` for Prometheus, `/health` (the process is alive)
 * and `/ready` (consumers running, Redis connected) for orchestrators: the same names as the
 * API's. `/healthz` and `/readyz`, the names of earlier versions, answer too, so probes already
 * configured keep working.
 */
export function createWorkerHttpApp(deps: {
  registry: () => MetricsRegistry | undefined;
  isReady: () => boolean;
}): Hono {
  const app = new Hono();
  for (const path of ['/health', '/healthz']) app.get(path, (c) => c.json({ status: 'ok' }));
  for (const path of ['/ready', '/readyz']) {
    app.get(path, (c) => (deps.isReady() ? c.json({ status: 'ready' }) : c.json({ status: 'not_ready' }, 503)));
  }
  app.get('/metrics', async (c) => {
    // Until the models are loaded and the runtime exists there is nothing to report.
    const primary = deps.registry();
    if (!primary) return c.text('starting\n', 503);
    // OpenMetrics with exemplars for a scraper that asks for it (tracing on), else the text format.
    const registry = registryFor(primary, c.req.header('accept'));
    return c.body(await registry.metrics(), 200, { 'content-type': registry.contentType });
  });
  return app;
}

export function serveWorkerHttp(app: Hono, host: string, port: number) {
  return serve({ fetch: app.fetch, hostname: host, port });
}
