import { Counter, Histogram } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { collectProcessMetrics, createMetricsRegistry, registryFor } from './metrics';

const OPEN_METRICS = 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5';

function registryWithTraffic(openMetrics: boolean) {
  const registry = createMetricsRegistry(openMetrics, { service: 'api' });
  const requests = new Counter({ name: 'quern_t_requests_total', help: 'h', registers: [registry] });
  const latency = new Histogram<'route' | 'trace_id'>({
    name: 'quern_t_duration_seconds',
    help: 'h',
    labelNames: ['route'],
    buckets: [0.1, 1],
    registers: [registry],
    enableExemplars: openMetrics,
  });
  requests.inc();
  if (openMetrics) {
    latency.observe({ labels: { route: '/x' }, value: 0.05, exemplarLabels: { trace_id: 'abc123' } });
  } else latency.labels('/x').observe(0.05);
  return registry;
}

describe('metrics registries and the scrape format', () => {
  it('tracing off: one text-format registry, whatever the scraper asks for', async () => {
    const registry = registryWithTraffic(false);
    expect(registryFor(registry, OPEN_METRICS)).toBe(registry);
    expect(registry.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await registry.metrics()).toContain('quern_t_requests_total{service="api"} 1');
  });

  it('tracing on: OpenMetrics with the exemplar to a scraper that asks, text without it to others', async () => {
    const registry = registryWithTraffic(true);
    const open = registryFor(registry, OPEN_METRICS);
    expect(open.contentType).toMatch(/^application\/openmetrics-text/);
    const openText = await open.metrics();
    expect(openText).toMatch(
      /^quern_t_duration_seconds_bucket\{le="0\.1",service="api",route="\/x"\} 1 # \{trace_id="abc123"\} 0\.05 /m,
    );
    expect(openText).toContain('quern_t_requests_total{service="api"} 1');

    const text = registryFor(registry, 'text/plain');
    expect(text).toBe(registryFor(registry, undefined));
    expect(text.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    // After an OpenMetrics render (which renames counter families without `_total`), the text
    // format still names the family with it, as the dashboards and promtool expect.
    const plain = await text.metrics();
    expect(plain).toContain('# TYPE quern_t_requests_total counter');
    expect(plain).toContain('quern_t_requests_total{service="api"} 1');
    expect(plain).toContain('quern_t_duration_seconds_bucket{le="0.1",service="api",route="/x"} 1');
    expect(plain).not.toContain('trace_id');
  });

  it('leaves out prom-client’s gauges named like counters', async () => {
    const registry = createMetricsRegistry(false, { service: 'worker' });
    collectProcessMetrics(registry);
    const text = await registry.metrics();
    expect(text).toContain('nodejs_active_handles{');
    expect(text).not.toContain('nodejs_active_handles_total');
    expect(text).not.toContain('nodejs_active_requests_total');
    expect(text).not.toContain('nodejs_active_resources_total');
  });
});
