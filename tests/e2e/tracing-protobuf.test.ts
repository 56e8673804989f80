import { randomBytes } from 'node:crypto';
import { ensurePythonVenv } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JSON_HEADERS, type ProcessStack, startProcessStack } from '../ops/process-stack';
import { OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver';

/**
 * The SDK's default protocol, `http/protobuf`, against a receiver that decodes with the
 * protocol's own generated classes (PyPI's opentelemetry-proto): one sync predict's spans arrive
 * from both processes, in one trace, under the caller's traceparent.
 */
let stack: ProcessStack;
let otlp: OtlpReceiver;

beforeAll(async () => {
  const venv = await ensurePythonVenv({
    dir: 'tests/clients/.venv',
    requirements: 'tests/clients/requirements.txt',
    label: 'otlp receiver',
  });
  otlp = await OtlpReceiver.startProtobuf(venv.python);
  stack = await startProcessStack({
    // No OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf is the default.
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url(), OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_SERVICE_NAME: 'quern-pb' },
  });
}, 600_000);

afterAll(async () => {
  await stack?.stop();
  await otlp?.close();
});

describe('OTLP over http/protobuf', () => {
  it('a sync predict: request, enqueue and job spans in the caller’s trace, decoded from protobuf', async () => {
    const traceId = randomBytes(16).toString('hex');
    const caller = randomBytes(8).toString('hex');
    const res = await fetch(`${stack.apiUrl}/v1/predict`, {
      method: 'POST',
      headers: { ...JSON_HEADERS, traceparent: `00-${traceId}-${caller}-01` },
      body: JSON.stringify({ features: [6, 225, 100, 3233, 15.4, 1976] }),
    });
    expect(res.status, stack.api.lines.slice(-5).join('\n')).toBe(200);
    const [request] = await otlp.waitFor((s) => s.traceId === traceId && s.parentSpanId === caller);
    const req = request as ReceivedSpan;
    expect(req).toMatchObject({ name: 'POST /v1/predict', kind: 2, service: 'quern-pb' });
    const [enqueue] = await otlp.waitFor((s) => s.traceId === traceId && s.parentSpanId === req.spanId);
    const [job] = await otlp.waitFor((s) => s.traceId === traceId && s.parentSpanId === enqueue?.spanId);
    expect(job).toMatchObject({
      name: 'job cars-mpg',
      kind: 5,
      attributes: expect.objectContaining({ 'quern.rows': 1 }),
    });
    expect(job?.startNs).toBeLessThanOrEqual(job?.endNs ?? 0n);
    expect([...otlp.contentTypes]).toEqual(['application/x-protobuf']);
  });
});
