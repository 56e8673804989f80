import { DirectOrt, OTHER_API_KEY, TEST_API_KEY } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sseReader } from '../support/sse';
import { type Stack, startStack } from '../support/stack';

/**
 * The tutorial's own contract (docs/compatibility.md): its paths answer as the tutorial did,
 * the deprecated ones say so (RFC 9745), and `/jobs` is served beside `/v1/jobs`. Real Redis,
 * BullMQ and ONNX Runtime; tests/clients/tutorial-contract.test.ts runs the tutorial's own
 * test suite over HTTP.
 */
let stack: Stack;
let cars: DirectOrt;

beforeAll(async () => {
  stack = await startStack();
  const entry = stack.manifest.models.find((m) => m.name === 'cars-mpg');
  if (!entry) throw new Error('no cars-mpg model');
  cars = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, entry);
});

afterAll(async () => {
  await cars?.release();
  await stack?.close();
});

interface TutorialPrediction {
  prediction: number;
  latency_ms: number;
  cached: boolean;
  model_version: string;
}

describe('the tutorial’s paths', () => {
  it('GET /health answers the tutorial’s HealthResponse', async () => {
    const res = await stack.app.request('/health');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'healthy', model_loaded: true, version: '1.0.0' });
  });

  it('POST /batch-predict answers one object per row, cached true exactly where the row was a cache hit', async () => {
    const seen = [5, 150, 95, 2800, 16.5, 1977];
    const fresh = [7, 305, 140, 3900, 12.5, 1973];
    // One row computed first, so the result cache holds it.
    const first = await stack.post('/v1/predict', { features: seen });
    expect(first.status).toBe(200);
    expect(((await first.json()) as { cached: boolean }).cached).toBe(false);

    const res = await stack.post('/batch-predict', { requests: [{ features: seen }, { features: fresh }] });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { predictions: TutorialPrediction[]; total_latency_ms: number };
    expect(body.predictions.map((p) => p.cached)).toEqual([true, false]);
    const expected = await cars.run([seen, fresh]);
    body.predictions.forEach((p, i) => {
      expect(Math.abs(p.prediction - (expected[i]?.[0] as number))).toBeLessThan(1e-4);
      expect(p.model_version).toBe('1.0.0');
      expect(p.latency_ms).toBeGreaterThan(0);
    });
    expect(body.total_latency_ms).toBeGreaterThan(0);

    // Asked again, both rows are hits, answered without a job.
    const again = (await (
      await stack.post('/batch-predict', { requests: [{ features: seen }, { features: fresh }] })
    ).json()) as { predictions: TutorialPrediction[]; job_id: string | null };
    expect(again.predictions.map((p) => p.cached)).toEqual([true, true]);
    expect(again.job_id).toBeNull();

    // /v1/batch-predict keeps its own shape: bare predictions.
    const v1 = (await (await stack.post('/v1/batch-predict', { requests: [{ features: fresh }] })).json()) as {
      predictions: unknown[];
    };
    expect(typeof v1.predictions[0]).toBe('number');
  });

  it('the deprecated aliases carry Deprecation and a successor Link on every answer, errors included', async () => {
    const deprecatedAt = `@${Date.UTC(2026, 10, 30) / 1000}`;
    const cases = [
      { path: '/predict', body: { features: [4, 140, 90, 2264, 15.5, 1971] }, successor: '/v1/predict', status: 200 },
      {
        path: '/batch-predict',
        body: { requests: [{ features: [4, 140, 90, 2264, 15.5, 1971] }] },
        successor: '/v1/batch-predict',
        status: 200,
      },
      { path: '/predict', body: { features: [1, 2] }, successor: '/v1/predict', status: 422 },
    ];
    for (const c of cases) {
      const res = await stack.post(c.path, c.body);
      expect(res.status, c.path).toBe(c.status);
      expect(res.headers.get('deprecation')).toBe(deprecatedAt);
      expect(res.headers.get('link')).toBe(`<${c.successor}>; rel="successor-version"`);
    }
    const unauthenticated = await stack.app.request('/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] }),
    });
    expect(unauthenticated.status).toBe(401);
    expect(unauthenticated.headers.get('deprecation')).toBe(deprecatedAt);
    // The /v1 routes and /jobs are not deprecated.
    for (const res of [
      await stack.post('/v1/predict', { features: [4, 140, 90, 2264, 15.5, 1971] }),
      await stack.post('/jobs', { features: [4, 140, 90, 2264, 15.5, 1971] }),
    ]) {
      expect(res.headers.get('deprecation')).toBeNull();
      expect(res.headers.get('link')).toBeNull();
    }
  });
});

describe('/jobs, the path the service was specified with', () => {
  it('POST /jobs, then GET /jobs/{id} until it succeeds, its events, and DELETE of the finished job', async () => {
    const features = [6, 225, 105, 3400, 16, 1976];
    const created = await stack.post('/jobs', { features });
    expect(created.status).toBe(202);
    const { id } = (await created.json()) as { id: string };
    expect(created.headers.get('location')).toBe(`/v1/jobs/${id}`);

    let prediction = Number.NaN;
    await expect
      .poll(
        async () => {
          const job = (await (await stack.get(`/jobs/${id}`)).json()) as {
            status: string;
            output: { prediction: number } | null;
          };
          prediction = job.output?.prediction ?? Number.NaN;
          return job.status;
        },
        { timeout: 10_000, interval: 20 },
      )
      .toBe('succeeded');
    const [expected] = await cars.run([features]);
    expect(Math.abs(prediction - (expected?.[0] as number))).toBeLessThan(1e-4);
    // The same resource as /v1/jobs/{id}.
    expect(await (await stack.get(`/jobs/${id}`)).json()).toEqual(await (await stack.get(`/v1/jobs/${id}`)).json());

    const events = await stack.get(`/jobs/${id}/events`);
    expect(events.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect((await sseReader(events).next())?.event).toBe('succeeded');

    const cancel = await stack.app.request(`/jobs/${id}`, {
      method: 'DELETE',
      headers: { 'x-api-key': TEST_API_KEY },
    });
    expect(cancel.status).toBe(409);
    expect(((await cancel.json()) as { code: string }).code).toBe('job_finished');
  });

  it('another key’s job is a 404 on /jobs/{id} as on /v1/jobs/{id}', async () => {
    const created = await stack.post('/jobs', { features: [4, 120, 80, 2200, 16, 1980] });
    const { id } = (await created.json()) as { id: string };
    expect((await stack.get(`/jobs/${id}`, OTHER_API_KEY)).status).toBe(404);
  });
});

describe('/redoc', () => {
  it('serves ReDoc from the installed bundle, with a CSP that lets it run and no third-party origin', async () => {
    const page = await stack.app.request('/redoc');
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<redoc spec-url="/openapi.json">');
    expect(html).not.toMatch(/https?:\/\//);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain('worker-src blob:');
    const bundle = await stack.app.request('/redoc/assets/redoc.standalone.js');
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect((await bundle.arrayBuffer()).byteLength).toBeGreaterThan(500_000);
  });
});
