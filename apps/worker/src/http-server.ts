import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import type { Registry } from 'prom-client';

/**
 * The worker's own small HTTP port: `/metrics` for Prometheus, `/healthz` (the process is alive)
 * and `/readyz` (consumers running, Redis connected) for orchestrators.
 */
export function createWorkerHttpApp(deps: { registry: Registry; isReady: () => boolean }): Hono {
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', (c) => (deps.isReady() ? c.json({ status: 'ready' }) : c.json({ status: 'not_ready' }, 503)));
  app.get('/metrics', async (c) => {
    const body = await deps.registry.metrics();
    return c.body(body, 200, { 'content-type': deps.registry.contentType });
  });
  return app;
}

export function serveWorkerHttp(app: Hono, host: string, port: number) {
  return serve({ fetch: app.fetch, hostname: host, port });
}
