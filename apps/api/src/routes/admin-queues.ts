import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import type { Services } from '../services/services';

export const QUEUE_DASHBOARD_PATH = '/admin/queues';

/** Bull Board's page loads its own scripts and styles; nothing from elsewhere (its Google font link is blocked). */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/**
 * Bull Board at /admin/queues: every model queue and the webhooks queue, for people with the
 * `admin` scope. A browser is asked for HTTP Basic credentials (any user name, the API key as
 * password) and sends them with every later request of the page.
 */
export function registerQueueDashboard(app: OpenAPIHono<AppEnv>, services: Services): void {
  const adapter = new HonoAdapter(serveStatic);
  adapter.setBasePath(QUEUE_DASHBOARD_PATH);
  createBullBoard({
    queues: services.queues.map((queue) => new BullMQAdapter(queue, { description: queue.name })),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: 'Quern queues', hideRedisDetails: false } },
  });
  const guard = requireAuth('admin', { challenge: 'basic' });
  app.use(QUEUE_DASHBOARD_PATH, guard);
  app.use(`${QUEUE_DASHBOARD_PATH}/*`, guard);
  app.use(QUEUE_DASHBOARD_PATH, async (c, next) => {
    await next();
    c.header('content-security-policy', CSP);
  });
  app.use(`${QUEUE_DASHBOARD_PATH}/*`, async (c, next) => {
    await next();
    c.header('content-security-policy', CSP);
  });
  app.route(QUEUE_DASHBOARD_PATH, adapter.registerPlugin());
}
