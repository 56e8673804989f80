import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JSON_HEADERS, type ProcessStack, pollUntil, startProcessStack } from '../ops/process-stack';
import { runTool } from '../ops/promtool';
import { OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver';
import { WebhookReceiver } from '../support/webhook-receiver';

/**
 * OpenTelemetry traces across the API and a worker, run as separate processes that export OTLP
 * over HTTP (`http/json`) to a receiver in this test: the span tree of a sync predict, of an
 * async job with a webhook, and of sync calls coalesced into one job.
 */
let stack: ProcessStack;
let otlp: OtlpReceiver;
let hooks: WebhookReceiver;
const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;
const CONSUMER = 5;

beforeAll(async () => {
  [otlp, hooks] = await Promise.all([OtlpReceiver.start(), WebhookReceiver.start()]);
  stack = await startProcessStack({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url(),
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_TRACES_SAMPLER: 'parentbased_always_on',
      // Export within a tenth of a second instead of five.
      OTEL_BSP_SCHEDULE_DELAY: '100',
      QUERN_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${hooks.port}`,
    },
  });
});

afterAll(async () => {
  await stack?.stop();
  await Promise.all([otlp?.close(), hooks?.close()]);
});

function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${stack.apiUrl}${path}`, {
    method: 'POST',
    headers: { ...JSON_HEADERS, ...headers },
    body: JSON.stringify(body),
  });
}

/** Features no other test sends: every call misses the result cache and makes a job. */
let seed = 0;
function freshCar(): number[] {
  seed++;
  return [4, 100 + seed, 90, 2000 + seed * 7, 15.5, 1971];
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const childOf = (parent: ReceivedSpan) => (s: ReceivedSpan) =>
  s.traceId === parent.traceId && s.parentSpanId === parent.spanId;

describe('traces across API, queue, worker and ONNX Runtime', () => {
  it('a sync predict: request ← enqueue ← job (queued, reply) in the caller’s trace; a batch span linked to the job', async () => {
    const traceId = hex(16);
    const callerSpan = hex(8);
    const res = await post('/v1/predict', { features: freshCar() }, { traceparent: `00-${traceId}-${callerSpan}-01` });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id');

    const [request] = await otlp.waitFor((s) => s.traceId === traceId && s.kind === SERVER);
    expect(request).toMatchObject({
      service: 'quern-api',
      name: 'POST /v1/predict',
      parentSpanId: callerSpan,
      attributes: expect.objectContaining({
        'http.route': '/v1/predict',
        'http.response.status_code': 200,
        'quern.request_id': requestId,
      }),
    });
    const req = request as ReceivedSpan;
    const [enqueue] = await otlp.waitFor((s) => childOf(req)(s) && s.kind === PRODUCER);
    expect(enqueue).toMatchObject({ service: 'quern-api', name: 'enqueue cars-mpg' });
    const jobId = (enqueue as ReceivedSpan).attributes['quern.job_id'];
    expect(req.attributes['quern.job_id']).toBe(jobId);

    const [job] = await otlp.waitFor((s) => childOf(enqueue as ReceivedSpan)(s) && s.kind === CONSUMER);
    expect(job).toMatchObject({
      service: 'quern-worker',
      name: 'job cars-mpg',
      attributes: expect.objectContaining({
        'quern.job_id': jobId,
        'quern.request_id': requestId,
        'quern.model': 'cars-mpg',
        'quern.batch_size': 1,
      }),
    });
    const jobSpan = job as ReceivedSpan;
    const children = await otlp.waitFor(childOf(jobSpan), 2);
    expect(children.map((s) => s.name).sort()).toEqual(['queued', 'reply']);
    const queued = children.find((s) => s.name === 'queued') as ReceivedSpan;
    // The time queued starts with the job, at the enqueue.
    expect(queued.startNs).toBe(jobSpan.startNs);
    expect(queued.endNs).toBeGreaterThanOrEqual(queued.startNs);

    // One inference span per batch, in a trace of its own, linked to the job it served.
    const [batch] = await otlp.waitFor(
      (s) => s.name === 'inference cars-mpg' && s.links.some((l) => l.spanId === jobSpan.spanId),
    );
    expect(batch).toMatchObject({
      service: 'quern-worker',
      parentSpanId: '',
      attributes: expect.objectContaining({
        'quern.model': 'cars-mpg',
        'quern.model_version': expect.any(String),
        'quern.batch_size': 1,
        'quern.batch_jobs': 1,
      }),
    });
    expect((batch as ReceivedSpan).traceId).not.toBe(traceId);
    expect((batch as ReceivedSpan).links).toEqual([expect.objectContaining({ traceId, spanId: jobSpan.spanId })]);

    // The request id and the trace id name each other: the access line carries the trace id.
    const line = await stack.api.waitForLog((l) => l.msg === 'request' && l.request_id === requestId);
    expect(line.trace_id).toBe(traceId);

    // Exemplars: the latency buckets this request and its job fell in carry the trace id.
    const exemplar = new RegExp(`_bucket\\{[^}]*\\} \\d+ # \\{trace_id="${traceId}"\\} [\\d.e-]+ [\\d.]+$`, 'm');
    // Prometheus asks for OpenMetrics, the one format with exemplars.
    const openMetrics = { accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' };
    const api = await fetch(`${stack.apiUrl}/metrics`, { headers: openMetrics });
    expect(api.headers.get('content-type')).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
    const apiText = await api.text();
    expect(apiText).toMatch(new RegExp(`^quern_http_request_duration_seconds${exemplar.source}`, 'm'));
    expect(apiText.trimEnd().endsWith('# EOF')).toBe(true);
    const workerText = await (await fetch(`${stack.workerUrl}/metrics`, { headers: openMetrics })).text();
    expect(workerText).toMatch(new RegExp(`^quern_job_duration_seconds${exemplar.source}`, 'm'));
    expect(workerText).toMatch(new RegExp(`^quern_job_queue_wait_seconds${exemplar.source}`, 'm'));
  });

  it('with tracing on, a scraper that does not ask for OpenMetrics gets the text format, promtool-clean', async () => {
    for (const url of [stack.apiUrl, stack.workerUrl]) {
      const res = await fetch(`${url}/metrics`);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      expect(text).toContain('quern_');
      expect(text).not.toContain('# {trace_id=');
      const result = await runTool(PROMTOOL, ['check', 'metrics'], undefined, text);
      expect(result.output.trim()).toBe('');
      expect(result.code).toBe(0);
    }
  });

  it('an async job with a webhook: the delivery attempt is a span under the job’s span', async () => {
    const res = await post('/v1/jobs', { features: freshCar(), webhook: { url: hooks.url() } });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const [enqueue] = await otlp.waitFor((s) => s.kind === PRODUCER && s.attributes['quern.job_id'] === id);
    const enq = enqueue as ReceivedSpan;
    const [request] = await otlp.waitFor((s) => s.spanId === enq.parentSpanId);
    expect(request).toMatchObject({ name: 'POST /v1/jobs', kind: SERVER, parentSpanId: '' });
    const [job] = await otlp.waitFor((s) => childOf(enq)(s) && s.kind === CONSUMER);
    const [attempt] = await otlp.waitFor((s) => childOf(job as ReceivedSpan)(s) && s.kind === CLIENT);
    expect(attempt).toMatchObject({
      service: 'quern-worker',
      name: 'webhook completed',
      status: 0,
      attributes: expect.objectContaining({
        'quern.job_id': id,
        'quern.attempt': 1,
        'http.response.status_code': 200,
      }),
    });
    await hooks.waitFor(1);
  });

  it('coalesced sync calls: each keeps its own trace and links to the job it shares', async () => {
    // While the group's first job is in flight, the calls behind it gather into one job.
    const calls = Array.from({ length: 12 }, () => {
      const traceId = hex(16);
      return {
        traceId,
        res: post('/v1/predict', { features: freshCar() }, { traceparent: `00-${traceId}-${hex(8)}-01` }),
      };
    });
    for (const { res } of calls) expect((await res).status).toBe(200);
    const traces = new Set(calls.map((c) => c.traceId));
    const requests = await otlp.waitFor((s) => traces.has(s.traceId) && s.kind === SERVER, calls.length);
    // Every caller has a trace of its own, with its request span naming the job it went into.
    expect(new Set(requests.map((s) => s.traceId)).size).toBe(calls.length);
    const linked = requests.filter((s) => s.links.length > 0);
    expect(linked.length, 'no call joined another call’s job').toBeGreaterThan(0);
    for (const caller of linked) {
      const [link] = caller.links;
      expect(link?.traceId).not.toBe(caller.traceId);
      // The link names the shared job's enqueue span, in the trace of the call that made the job.
      const [enqueue] = await otlp.waitFor((s) => s.spanId === link?.spanId && s.kind === PRODUCER);
      expect(enqueue?.attributes['quern.job_id']).toBe(caller.attributes['quern.job_id']);
      expect(link?.attributes['quern.job_id']).toBe(caller.attributes['quern.job_id']);
      expect(caller.attributes['quern.coalesced']).toBe(true);
      // That job's worker span is in the enqueuing call's trace and served several rows.
      const [job] = await otlp.waitFor((s) => childOf(enqueue as ReceivedSpan)(s) && s.kind === CONSUMER);
      expect(Number(job?.attributes['quern.rows'])).toBeGreaterThan(1);
    }
  });

  it('a caller’s unsampled trace is followed, not recorded: no span in either service, the trace id still logged', async () => {
    const left = hex(16);
    const res = await post('/v1/predict', { features: freshCar() }, { traceparent: `00-${left}-${hex(8)}-00` });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id');
    // A sampled request after it: once its job span has arrived, the worker has exported past the other.
    const kept = hex(16);
    expect(
      (await post('/v1/predict', { features: freshCar() }, { traceparent: `00-${kept}-${hex(8)}-01` })).status,
    ).toBe(200);
    await otlp.waitFor((s) => s.traceId === kept && s.kind === CONSUMER);
    await otlp.waitFor((s) => s.traceId === kept && s.kind === SERVER);
    expect(otlp.spans.filter((s) => s.traceId === left)).toEqual([]);
    expect(otlp.spans.filter((s) => s.links.some((l) => l.traceId === left))).toEqual([]);
    const line = await stack.api.waitForLog((l) => l.msg === 'request' && l.request_id === requestId);
    expect(line.trace_id).toBe(left);
  });

  it('a handler’s own log lines (here an audit line) carry the request id and the trace id', async () => {
    const traceId = hex(16);
    const res = await post('/v1/admin/keys', { name: 'traced' }, { traceparent: `00-${traceId}-${hex(8)}-01` });
    expect(res.status).toBe(201);
    const audit = await stack.api.waitForLog(
      (l) => l.msg === 'audit' && l.action === 'api_key.create' && l.trace_id === traceId,
    );
    expect(audit.request_id).toBe(res.headers.get('x-request-id'));
  });

  it('a request without a traceparent starts a trace of its own', async () => {
    const res = await post('/v1/predict', { features: freshCar() });
    const requestId = res.headers.get('x-request-id');
    const [request] = await otlp.waitFor((s) => s.kind === SERVER && s.attributes['quern.request_id'] === requestId);
    expect(request?.parentSpanId).toBe('');
    const line = await stack.api.waitForLog((l) => l.msg === 'request' && l.request_id === requestId);
    expect(line.trace_id).toBe(request?.traceId);
    await pollUntil(
      'the job span in the same trace',
      async () => otlp.spans.filter((s) => s.traceId === request?.traceId && s.kind === CONSUMER).length,
      (n) => n === 1,
    );
  });
});
