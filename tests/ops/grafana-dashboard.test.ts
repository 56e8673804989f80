import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DASHBOARD_FILE, dashboard, dashboardExpressions, GRAFANA_DIR, metricNamesIn } from './monitoring-assets';

interface GridPos {
  h: number;
  w: number;
  x: number;
  y: number;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: GridPos;
  datasource?: { type: string; uid: string };
  targets?: { refId: string; expr: string; datasource?: { type: string; uid: string } }[];
  panels?: Panel[];
}

const board = dashboard() as { uid: string; schemaVersion: number; panels: Panel[]; templating: { list: unknown[] } };
const panels = board.panels.flatMap((p) => [p, ...(p.panels ?? [])]);

describe('Grafana provisioning and the Quern dashboard', () => {
  it('provisions the Prometheus datasource under the uid the dashboard uses', () => {
    const doc = parse(readFileSync(join(GRAFANA_DIR, 'provisioning/datasources/prometheus.yml'), 'utf8')) as {
      datasources: { name: string; uid: string; type: string; url: string }[];
    };
    expect(doc.datasources).toEqual([
      expect.objectContaining({
        name: 'Prometheus',
        uid: 'prometheus',
        type: 'prometheus',
        url: 'http://prometheus:9090',
      }),
    ]);
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: 'prometheus' });
      for (const t of panel.targets ?? []) expect(t.datasource?.uid, panel.title).toBe('prometheus');
    }
  });

  it('loads dashboards from the folder the provider points at', () => {
    const doc = parse(readFileSync(join(GRAFANA_DIR, 'provisioning/dashboards/quern.yml'), 'utf8')) as {
      providers: { type: string; options: { path: string } }[];
    };
    expect(doc.providers).toEqual([
      expect.objectContaining({
        type: 'file',
        options: expect.objectContaining({ path: '/var/lib/grafana/dashboards' }),
      }),
    ]);
    expect(DASHBOARD_FILE.endsWith('deployment/grafana/dashboards/quern.json')).toBe(true);
  });

  it('is a dashboard Grafana can import: uid, schema version, unique ids, panels on the 24-column grid without overlap', () => {
    expect(board.uid).toBe('quern');
    expect(board.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const { title, gridPos } of panels) {
      expect(gridPos.x + gridPos.w, title).toBeLessThanOrEqual(24);
      for (let x = gridPos.x; x < gridPos.x + gridPos.w; x++) {
        for (let y = gridPos.y; y < gridPos.y + gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${title} overlaps another panel at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      const refIds = (panel.targets ?? []).map((t) => t.refId);
      expect(new Set(refIds).size, panel.title).toBe(refIds.length);
    }
  });

  it('has the model variable, and every per-model metric is filtered by it', () => {
    expect(board.templating.list).toContainEqual(
      expect.objectContaining({ name: 'model', type: 'query', multi: true, includeAll: true, allValue: '.*' }),
    );
    const perModel = [
      'quern_jobs_finished_total',
      'quern_jobs_submitted_total',
      'quern_queue_jobs',
      'quern_queue_oldest_waiting_age_seconds',
      'quern_batch_size',
      'quern_inference_duration_seconds',
      'quern_job_duration_seconds',
      'quern_job_queue_wait_seconds',
      'quern_result_cache_lookups_total',
      'quern_sync_wait_timeouts_total',
    ];
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    for (const expr of exprs) {
      for (const m of expr.matchAll(/\b(quern_[a-z0-9_]+?)(?:_bucket|_sum|_count)?\{([^}]*)\}/g)) {
        if (perModel.includes(m[1] ?? '')) expect(m[2], expr).toContain('model=~"$model"');
      }
    }
  });

  it('covers throughput, latency, queues, batching, cache, errors, webhooks and workers', () => {
    const used = new Set(dashboardExpressions().flatMap(metricNamesIn));
    for (const name of [
      'quern_jobs_finished_total',
      'quern_http_requests_total',
      'quern_http_request_duration_seconds_bucket',
      'quern_job_duration_seconds_bucket',
      'quern_queue_jobs',
      'quern_queue_oldest_waiting_age_seconds',
      'quern_batch_size_bucket',
      'quern_batch_size_sum',
      'quern_batch_size_count',
      'quern_result_cache_lookups_total',
      'quern_auth_failures_total',
      'quern_rate_limited_total',
      'quern_webhook_deliveries_total',
      'quern_webhook_delivery_duration_seconds_bucket',
      'quern_workers_alive',
      'quern_inference_pool_busy_ratio',
      'quern_inference_duration_seconds_bucket',
    ]) {
      expect([...used], name).toContain(name);
    }
    const heatmap = panels.find((p) => p.type === 'heatmap');
    expect(heatmap?.targets?.[0]?.expr).toContain('quern_batch_size_bucket');
  });

  it('shows exemplars on the latency histograms that carry a trace id, and links them to a trace', () => {
    // The histograms whose buckets keep a trace id as exemplar (tracing on): every graph built on
    // one of them asks Grafana for exemplars (a stat panel has nowhere to draw them).
    const traced = ['quern_http_request_duration_seconds_bucket', 'quern_job_duration_seconds_bucket'];
    const targets = panels
      .filter((p) => p.type === 'timeseries')
      .flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, ...t })));
    const withExemplars = targets.filter((t) => traced.some((m) => t.expr.includes(m)));
    expect(withExemplars.length).toBeGreaterThanOrEqual(2);
    for (const t of withExemplars) expect((t as { exemplar?: boolean }).exemplar, `${t.panel}: ${t.expr}`).toBe(true);
    const doc = parse(readFileSync(join(GRAFANA_DIR, 'provisioning/datasources/prometheus.yml'), 'utf8')) as {
      datasources: { jsonData: { exemplarTraceIdDestinations?: { name: string; url?: string }[] } }[];
    };
    const [destination] = doc.datasources[0]?.jsonData.exemplarTraceIdDestinations ?? [];
    // The exemplar label the services write (`trace_id`), and Grafana's placeholder for its value.
    expect(destination?.name).toBe('trace_id');
    expect(destination?.url).toContain('$${__value.raw}');
  });
});
