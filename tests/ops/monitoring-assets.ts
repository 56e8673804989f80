import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { parse } from 'yaml';

export const PROMETHEUS_DIR = join(REPO_ROOT, 'deployment/prometheus');
export const PROMETHEUS_CONFIG = join(PROMETHEUS_DIR, 'prometheus.yml');
export const RULES_FILE = join(PROMETHEUS_DIR, 'rules/quern-alerts.yml');
export const RULE_TESTS_FILE = join(PROMETHEUS_DIR, 'tests/quern-alerts.test.yml');
export const GRAFANA_DIR = join(REPO_ROOT, 'deployment/grafana');
export const DASHBOARD_FILE = join(GRAFANA_DIR, 'dashboards/quern.json');

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface RulesDocument {
  groups: { name: string; rules: AlertRule[] }[];
}

/** Every alerting rule of the rules file. */
export function alertRules(): AlertRule[] {
  const doc = parse(readFileSync(RULES_FILE, 'utf8')) as RulesDocument;
  return doc.groups.flatMap((g) => g.rules);
}

/** The dashboard JSON as parsed. */
export function dashboard(): Record<string, unknown> {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Record<string, unknown>;
}

/** Every PromQL string in the dashboard: panel targets' `expr` and template variable queries. */
export function dashboardExpressions(): string[] {
  const out: string[] = [];
  const walk = (node: unknown, key: string | undefined, inTemplating: boolean): void => {
    if (typeof node === 'string') {
      if (key === 'expr' || (inTemplating && (key === 'query' || key === 'definition'))) out.push(node);
      return;
    }
    if (Array.isArray(node)) {
      for (const item of node) walk(item, key, inTemplating);
      return;
    }
    if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) walk(v, k, inTemplating || k === 'templating');
    }
  };
  walk(dashboard(), undefined, false);
  return out;
}

/** Quern metric names an expression uses, exactly as written (`_bucket` etc. included). */
export function metricNamesIn(expr: string): string[] {
  return [...new Set(expr.match(/\bquern_[a-z0-9_]+/g) ?? [])];
}

/** For each `quern_x{...}` selector, the label names its matchers use. */
export function selectorLabelsIn(expr: string): { metric: string; labels: string[] }[] {
  const out: { metric: string; labels: string[] }[] = [];
  for (const m of expr.matchAll(/\b(quern_[a-z0-9_]+)\s*\{([^}]*)\}/g)) {
    const matchers = m[2] ?? '';
    const labels = [...matchers.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/g)].map(
      (l) => l[1] ?? '',
    );
    out.push({ metric: m[1] ?? '', labels });
  }
  return out;
}

/** One scrape of a Prometheus text endpoint: `# TYPE` lines and the label sets of each sample name. */
export interface Exposition {
  types: Map<string, string>;
  samples: Map<string, Record<string, string>[]>;
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples = new Map<string, Record<string, string>[]>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      types.set(type[1] ?? '', type[2] ?? '');
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!sample) continue;
    const labels: Record<string, string> = {};
    for (const l of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] ?? ''] = l[2] ?? '';
    }
    const name = sample[1] ?? '';
    samples.set(name, [...(samples.get(name) ?? []), labels]);
  }
  return { types, samples };
}

/**
 * The metric family that exports `name` (its `# TYPE` line), mapping a histogram's `_bucket`,
 * `_sum` and `_count` series (and a summary's `_sum` and `_count`) back to their family.
 */
export function familyOf(name: string, exposition: Exposition): string | undefined {
  if (exposition.types.has(name)) return name;
  const series = /^(.+)_(bucket|sum|count)$/.exec(name);
  if (!series) return undefined;
  const base = series[1] ?? '';
  const type = exposition.types.get(base);
  if (type === 'histogram') return base;
  if (type === 'summary' && series[2] !== 'bucket') return base;
  return undefined;
}
