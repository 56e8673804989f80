/** The ceiling of an HTTP route on this machine: Hono on @hono/node-server, parse a JSON body, answer 202. */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';

const app = new Hono();
app.post('/v1/jobs', async (c) => {
  const body = (await c.req.json()) as { features?: unknown };
  return c.json({ id: 'job_trivial', received: Array.isArray(body.features) }, 202);
});
serve({ fetch: app.fetch, hostname: '127.0.0.1', port: Number(process.env.PORT) }, () =>
  process.stdout.write('listening\n'),
);
