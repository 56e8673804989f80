import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import { problem, toQuernError } from '../errors';
import { requireAuth } from '../middleware/auth';
import type { Services } from '../services/services';

export const QUEUE_DASHBOARD_PATH = '/admin/queues';

/** Words Bull Board's API uses where a job id would stand (`/api/queues/:queue/retry/:status`, …). */
const QUEUE_ACTIONS = new Set(['retry', 'promote', 'clean', 'pause', 'resume', 'empty', 'add']);
/** The ids Quern gives jobs: inference jobs, and webhook deliveries (`<job id>.<event>`). */
const JOB_ID = /^job_[0-9A-Za-z]{22}(\.[a-z]+)?$/;

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
  // Bull Board looks any id up as a job hash; an id such as `completed` names one of the queue's
  // own keys, and Redis answers WRONGTYPE. Only ids Quern gives reach it.
  const checkJobId = createMiddleware<AppEnv>(async (c, next) => {
    const id = c.req.param('jobId') ?? '';
    if (!QUEUE_ACTIONS.has(id) && !JOB_ID.test(id)) {
      return problem(c, new QuernError('job_not_found', 'no such job in this queue'));
    }
    return next();
  });
  app.use(`${QUEUE_DASHBOARD_PATH}/api/queues/:queueName/:jobId`, checkJobId);
  app.use(`${QUEUE_DASHBOARD_PATH}/api/queues/:queueName/:jobId/*`, checkJobId);
  // Bull Board answers its own errors with their message; ours never show internal text.
  app.use(`${QUEUE_DASHBOARD_PATH}/api/*`, async (c, next) => {
    await next();
    if (c.res.status >= 500) {
      const answer = (await c.res.text()).slice(0, 500);
      c.get('logger').error({ status: c.res.status, path: c.req.path, answer }, 'queue dashboard request failed');
      c.res = undefined;
      c.res = problem(c, toQuernError(new Error('queue dashboard failed'), services.redis.status === 'ready'));
    }
  });
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
