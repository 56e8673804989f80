import { describe, expect, it } from 'vitest';
import { InferenceJobData } from './jobs';
import { startTracing, TraceCarrier, traceIdOf, tracingWanted } from './tracing';
import { WebhookDeliveryData } from './webhooks';

const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('tracing switch (standard OTEL_* variables only)', () => {
  it('is off without an endpoint, on with one, and off again when disabled or the exporter is none', () => {
    expect(tracingWanted({})).toBe(false);
    expect(tracingWanted({ OTEL_SERVICE_NAME: 'x' })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'TRUE ' })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' })).toBe(false);
  });

  it('starts nothing when off', async () => {
    await expect(startTracing('api', {})).resolves.toBeUndefined();
  });
});

describe('the trace context in the job contract', () => {
  const job = {
    v: 1,
    model: 'cars-mpg',
    model_version: '1.0.0',
    rows: [[1, 2, 3, 4, 5, 6]],
    mode: 'sync',
    owner: 'key_x',
    request_id: 'req_x',
    created_at: 1,
    deadline_at: 2,
    priority: 1,
  };

  it('is optional, and a W3C traceparent (with a tracestate) is kept as sent', () => {
    expect(InferenceJobData.parse(job).trace).toBeUndefined();
    const trace = { traceparent: PARENT, tracestate: 'vendor=1' };
    expect(InferenceJobData.parse({ ...job, trace }).trace).toEqual(trace);
    expect(traceIdOf(trace)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
  });

  it('refuses a malformed one, on either side, like any other bad job data', () => {
    for (const traceparent of ['', 'nonsense', PARENT.toUpperCase(), `${PARENT}-00`, PARENT.replace('-01', '-1')]) {
      expect(TraceCarrier.safeParse({ traceparent }).success, traceparent).toBe(false);
      expect(InferenceJobData.safeParse({ ...job, trace: { traceparent } }).success).toBe(false);
    }
    expect(TraceCarrier.safeParse({ traceparent: PARENT, tracestate: 'x'.repeat(513) }).success).toBe(false);
    const delivery = {
      v: 1,
      webhook_id: 'evt_x',
      owner: 'key_x',
      job_id: 'job_x',
      model: 'cars-mpg',
      event: 'completed',
      url: 'https://example.com/hook',
      payload: '{}',
      request_id: 'req_x',
    };
    expect(WebhookDeliveryData.safeParse({ ...delivery, trace: { traceparent: PARENT } }).success).toBe(true);
    expect(WebhookDeliveryData.safeParse({ ...delivery, trace: { traceparent: 'x' } }).success).toBe(false);
  });
});
