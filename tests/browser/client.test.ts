import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { REPO_ROOT, TEST_API_KEY } from '@quern/devkit';
import { build } from 'esbuild';
import { type Browser, chromium } from 'playwright-core';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';

/**
 * @quern/client in a real browser (Debian's Chromium): bundled for the browser platform (esbuild
 * refuses a Node-only import there), loaded by a page on another origin than the API, so every
 * call also passes the API's CORS rules.
 */
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

let stack: Stack;
let api: Server;
let pages: Server;
let apiBase: string;
let pageBase: string;
let browser: Browser;

const listen = async (server: Server): Promise<string> => {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
};

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`tests/browser needs Chromium at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM`);
  }
  const bundle = await build({
    entryPoints: [join(REPO_ROOT, 'packages/client/src/index.ts')],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  const script = bundle.outputFiles[0]?.text ?? '';
  const page =
    '<!doctype html><title>client</title>' +
    '<script type="module">import * as Quern from "/client.js"; window.Quern = Quern;</script>';
  pages = createServer((req, res) => {
    if (req.url === '/client.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(script);
    else res.writeHead(200, { 'content-type': 'text/html' }).end(page);
  }).listen(0, '127.0.0.1');
  pageBase = await listen(pages);
  stack = await startStack({ QUERN_CORS_ORIGINS: pageBase });
  api = serve({ fetch: stack.app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  apiBase = await listen(api);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-gpu', '--no-first-run'],
  });
});

afterAll(async () => {
  await browser?.close();
  api?.closeAllConnections();
  await new Promise((resolve) => api?.close(resolve));
  await new Promise((resolve) => pages?.close(resolve));
  await stack?.close();
});

describe('@quern/client in a browser', () => {
  it('predicts, submits and streams, reads a problem and verifies a signed webhook, across origins', async () => {
    const secret = `whsec_${Buffer.from('a browser test secret, 32 bytes!').toString('base64')}`;
    const body = JSON.stringify({ type: 'job.completed', timestamp: new Date().toISOString(), data: { id: 'job_x' } });
    const signedAt = new Date();
    const signature = new Webhook(secret).sign('evt_1', signedAt, body);
    const timestamp = String(Math.floor(signedAt.getTime() / 1000));

    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(pageBase);
    await page.waitForFunction(() => 'Quern' in globalThis);
    const result = await page.evaluate(
      async ({ apiBase, key, secret, body, signature, timestamp }) => {
        const { Quern } = globalThis as unknown as { Quern: typeof import('@quern/client') };
        const quern = new Quern.QuernClient({ baseUrl: apiBase, apiKey: key });
        const predicted = await quern.predict({ features: [4, 140, 90, 2264, 15.5, 1971] });
        const job = await quern.submit({ features: [8, 350, 165, 3693, 11.5, 1970] });
        const events: string[] = [];
        for await (const e of quern.events(job.id)) events.push(e.event);
        const done = await quern.wait(job);
        const problem = await quern.predict({ features: [1, 2, 3] }).then(
          () => undefined,
          (err: unknown) => (Quern.isProblem(err) ? err : undefined),
        );
        const headers = new Headers({
          'webhook-id': 'evt_1',
          'webhook-timestamp': timestamp,
          'webhook-signature': signature,
        });
        const event = Quern.verifyWebhook(body, headers, secret);
        let forged = 'accepted';
        try {
          Quern.verifyWebhook(body.replace('job_x', 'job_y'), headers, secret);
        } catch {
          forged = 'refused';
        }
        return {
          prediction: predicted.prediction,
          events,
          status: done.status,
          problem: {
            typed: problem instanceof Quern.QuernProblemError,
            code: problem?.code,
            status: problem?.status,
            field: problem?.problem?.errors?.[0]?.field,
          },
          webhook: event.data.id,
          forged,
        };
      },
      { apiBase, key: TEST_API_KEY, secret, body, signature, timestamp },
    );
    expect(errors).toEqual([]);
    expect(result.prediction).toEqual(expect.any(Number));
    expect(result.events.at(-1)).toBe('succeeded');
    expect(result.status).toBe('succeeded');
    expect(result.problem).toEqual({ typed: true, code: 'validation_failed', status: 422, field: 'features' });
    expect(result.webhook).toBe('job_x');
    expect(result.forged).toBe('refused');
    await page.close();
  });
});
