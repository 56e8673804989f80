import { existsSync, mkdirSync, mkdtempSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { REPO_ROOT, randomRows, TEST_API_KEY } from '@quern/devkit';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';

/** The docs page and the queue dashboard, rendered by a real browser (Debian's Chromium). */
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_MISSING = [
  `tests/browser renders pages in Chromium, which is not at ${CHROMIUM}. Install it:`,
  '  Debian/Ubuntu:  sudo apt-get install -y chromium',
  '  elsewhere:      set CHROMIUM=/path/to/chromium (or Chrome)',
  '(.ci/run installs it on a fresh machine.)',
].join('\n');
/**
 * The published screenshots (docs/screenshots) are rewritten only by `pnpm screenshots`; a test
 * run writes its own to a temporary folder and leaves the tracked files alone.
 */
const SCREENSHOTS =
  process.env.SCREENSHOTS_RECORD === '1'
    ? join(REPO_ROOT, 'docs', 'screenshots')
    : mkdtempSync(join(tmpdir(), 'quern-screenshots-'));

let stack: Stack;
let server: ReturnType<typeof serve>;
let base: string;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM_MISSING);
  stack = await startStack();
  server = serve({ fetch: stack.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // Real data for the dashboard: finished jobs on both models, and a few waiting on a paused queue.
  await Promise.all(
    randomRows(40, 256, 7).map((features) => stack.post('/v1/predict', { model: 'mlp-large', features })),
  );
  await Promise.all(
    Array.from({ length: 25 }, (_, i) => stack.post('/v1/predict', { features: [4, 100 + i, 90, 2300, 15, 1975] })),
  );
  await stack.services.jobs.queueOf('cars-mpg').pause();
  await Promise.all(
    Array.from({ length: 5 }, (_, i) => stack.post('/v1/jobs', { features: [6, 200 + i, 110, 3200, 14, 1978] })),
  );
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-gpu', '--no-first-run'],
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await stack?.services.jobs.queueOf('cars-mpg').resume();
  server?.close();
  await stack?.close();
});

describe('in a browser', () => {
  it('/docs lists every operation of the OpenAPI document', async () => {
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const operations = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const failed: string[] = [];
    page.on('requestfailed', (r) => failed.push(r.url()));
    await page.goto(`${base}/docs`);
    await page.locator('.opblock-summary').first().waitFor({ timeout: 15_000 });
    expect(await page.locator('.opblock-summary').count()).toBe(operations);
    await expect
      .poll(() => page.locator('.opblock-summary-description').allInnerTexts())
      .toContain('Submit an inference job');
    expect(await page.locator('.info .title').textContent()).toContain('Quern');
    // Everything the page needs comes from the app itself.
    expect(failed).toEqual([]);
    const file = join(SCREENSHOTS, 'api-docs.png');
    await page.screenshot({ path: file, fullPage: false });
    expect(statSync(file).size).toBeGreaterThan(20_000);
    await page.close();
  });

  it('/redoc renders every operation from the app’s own bundle and fetches nothing elsewhere', async () => {
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const operations = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const loaded: string[] = [];
    const failed: string[] = [];
    const refusedByCsp: string[] = [];
    page.on('requestfinished', (r) => loaded.push(r.url()));
    page.on('requestfailed', (r) => failed.push(r.url()));
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) refusedByCsp.push(message.text());
    });
    await page.goto(`${base}/redoc`);
    await page.locator('h1').first().waitFor({ timeout: 20_000 });
    expect(await page.locator('h1').first().textContent()).toContain('Quern');
    // One entry per operation in ReDoc's side menu.
    await expect
      .poll(() => page.locator('li[data-item-id*="operation/"]').count(), { timeout: 15_000 })
      .toBe(operations);
    expect(loaded.length).toBeGreaterThan(0);
    expect(loaded.filter((url) => !url.startsWith(`${base}/`) && !url.startsWith('blob:'))).toEqual([]);
    // The bundle's one third-party URL, the "API docs by Redocly" logo, is refused by the page's
    // CSP (the image then hides itself); everything else comes from the app.
    const LOGO = 'https://cdn.redoc.ly/redoc/logo-mini.svg';
    expect(failed.filter((url) => url !== LOGO)).toEqual([]);
    expect(refusedByCsp.filter((text) => !text.includes(LOGO))).toEqual([]);
    await page.close();
  });

  it('/admin/queues asks for credentials, then shows the queues with their jobs', async () => {
    const refused = await fetch(`${base}/admin/queues`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
    // The text a person sees after cancelling the browser's dialog says what to enter there.
    expect(((await refused.json()) as { detail: string }).detail).toMatch(/HTTP Basic.*admin/);

    const context = await browser.newContext({
      httpCredentials: { username: 'admin', password: TEST_API_KEY },
      viewport: { width: 1280, height: 900 },
    });
    const page = await context.newPage();
    // Nothing the page links is refused by its own Content-Security-Policy.
    const refusedByCsp: string[] = [];
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) refusedByCsp.push(message.text());
    });
    await page.goto(`${base}/admin/queues`);
    await page.getByText('infer-mlp-large').first().waitFor({ timeout: 15_000 });
    await expect.poll(async () => (await page.content()).includes('infer-cars-mpg')).toBe(true);
    expect(refusedByCsp).toEqual([]);
    // The page's own <base href> (/admin/queues/) is the dashboard too.
    expect(await page.locator('base').getAttribute('href')).toBe('/admin/queues/');
    const atBase = await page.goto(`${base}/admin/queues/`);
    expect(atBase?.status()).toBe(200);
    await page.getByText('infer-mlp-large').first().waitFor({ timeout: 15_000 });
    expect(refusedByCsp).toEqual([]);
    await page.goto(`${base}/admin/queues`);
    await page.getByText('infer-mlp-large').first().waitFor({ timeout: 15_000 });
    await page.screenshot({ path: join(SCREENSHOTS, 'queue-dashboard.png') });
    // One queue's page, with its completed jobs listed.
    await page.goto(`${base}/admin/queues/queue/infer-mlp-large?status=completed`);
    await page
      .getByText(/job_[0-9A-Za-z]{22}/)
      .first()
      .waitFor({ timeout: 15_000 });
    const file = join(SCREENSHOTS, 'queue-dashboard-jobs.png');
    await page.screenshot({ path: file });
    expect(statSync(file).size).toBeGreaterThan(20_000);
    await context.close();
  });
});
