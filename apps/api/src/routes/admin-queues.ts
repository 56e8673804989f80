import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import { problem, toQuernError } from '../errors';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import type { Services } from '../services/services';

export const QUEUE_DASHBOARD_PATH = '/admin/queues';

/** Words Bull Board's API uses where a job id would stand (`/api/queues/:queue/retry/:status`, …). */
const QUEUE_ACTIONS = new Set([
  'retry',
  'promote',
  'clean',
  'pause',
  'resume',
  'empty',
  'add',
  'metrics',
  'workers',
  'rate-limit',
  'default-job-options',
  'job-data-schema',
  'concurrency',
  'obliterate',
  'job-schedulers',
]);
/** The ids Quern gives jobs: inference jobs, and webhook deliveries (`<job id>.<event>`). */
const JOB_ID = /^job_[0-9A-Za-z]{22}(\.[a-z]+)?$/;

/**
 * Bull Board's write routes that create jobs or change what a job carries or how queues run:
 * adding a job (to the webhooks queue: a payload signed with any principal's secret), editing a
 * job's data, job schedulers, obliterate, concurrency and rate-limit changes, delay and priority
 * edits. Jobs come in through the API, which checks what they carry. What stays: pause and resume,
 * retry, promote, clean, empty and removing jobs.
 */
const REFUSED_WRITES =
  /\/(add|update-data|obliterate|concurrency|rate-limit|rate-limit\/release|delay|priority)$|\/job-schedulers(\/|$)/;

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

/** Bull Board's page loads its own scripts and styles; nothing from elsewhere (see `ownPage`). */
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
  // Opening the page and every change made from it leave an audit line, refusals included (the
  // reads the page polls every few seconds do not).
  const audit = audited((c) => {
    const read = c.req.method === 'GET' || c.req.method === 'HEAD';
    if (read) return c.req.path === QUEUE_DASHBOARD_PATH ? { action: 'queue_dashboard.open' } : undefined;
    return {
      action: 'queue_dashboard.change',
      target: `${c.req.method} ${c.req.path.slice(QUEUE_DASHBOARD_PATH.length)}`,
    };
  });
  // Hono's `/*` matches the page's own path too: one registration, one line.
  app.use(`${QUEUE_DASHBOARD_PATH}/*`, audit);
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
  // Changes only from the dashboard's own page: a cross-site form or script cannot use an admin's
  // remembered Basic credentials (browsers send Origin and Sec-Fetch-Site on such requests).
  app.use(`${QUEUE_DASHBOARD_PATH}/api/*`, async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const site = c.req.header('sec-fetch-site');
    const origin = c.req.header('origin');
    // Sec-Fetch-Site, which a page cannot forge, decides when the browser sends it; Origin is
    // compared with the host only for browsers that do not (hosts, not origins: behind a
    // TLS-terminating proxy the scheme the API sees is not the browser's).
    const forwarded = services.config.QUERN_TRUST_PROXY_HOPS > 0 ? c.req.header('x-forwarded-host') : undefined;
    const host = forwarded?.split(',')[0]?.trim() ?? c.req.header('host');
    const foreign = site ? site !== 'same-origin' && site !== 'none' : origin !== undefined && hostOf(origin) !== host;
    if (foreign) {
      return problem(c, new QuernError('forbidden', 'queue dashboard changes are accepted from its own page only'));
    }
    if (REFUSED_WRITES.test(c.req.path)) {
      return problem(
        c,
        new QuernError('forbidden', 'the queue dashboard does not create or edit jobs; submit them through the API'),
      );
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
      c.res = problem(c, toQuernError(new Error('queue dashboard failed'), services.redisUp()));
    }
  });
  const ownPage = createMiddleware<AppEnv>(async (c, next) => {
    await next();
    c.header('content-security-policy', CSP);
    // Bull Board's page links Google's web fonts, which its CSP refuses (a console error in every
    // browser): the link goes, the page falls back to system fonts.
    if (c.res.headers.get('content-type')?.startsWith('text/html')) {
      const html = (await c.res.text()).replace(/<link[^>]*\/\/fonts\.(googleapis|gstatic)\.com[^>]*>\s*/g, '');
      const { status, headers } = c.res;
      headers.delete('content-length');
      c.res = undefined; // replaced, not merged: the old length must not come back
      c.res = new Response(html, { status, headers });
    }
  });
  app.use(QUEUE_DASHBOARD_PATH, ownPage);
  app.use(`${QUEUE_DASHBOARD_PATH}/*`, ownPage);
  // The page's <base href> is the path with a slash, where Bull Board's routes have no page.
  app.get(`${QUEUE_DASHBOARD_PATH}/`, (c) => c.redirect(QUEUE_DASHBOARD_PATH, 308));
  app.route(QUEUE_DASHBOARD_PATH, adapter.registerPlugin());
}
