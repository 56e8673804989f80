import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { type AlertRule, alertRules, PROMETHEUS_CONFIG, RULE_TESTS_FILE, RULES_FILE } from './monitoring-assets';
import { expectSuccess, runTool } from './promtool';

const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

interface RuleTests {
  tests: { name: string; alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
}

const scratch: string[] = [];
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

/** Runs the rule unit tests against a copy of the rules with one alert changed by `mutate`. */
async function testRulesWithMutation(alert: string, mutate: (rule: AlertRule) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'quern-rules-'));
  scratch.push(dir);
  mkdirSync(join(dir, 'rules'));
  mkdirSync(join(dir, 'tests'));
  const doc = parse(readFileSync(RULES_FILE, 'utf8')) as { groups: { rules: AlertRule[] }[] };
  const rule = doc.groups.flatMap((g) => g.rules).find((r) => r.alert === alert);
  if (!rule) throw new Error(`no alert ${alert}`);
  mutate(rule);
  writeFileSync(join(dir, 'rules/quern-alerts.yml'), stringify(doc));
  copyFileSync(RULE_TESTS_FILE, join(dir, 'tests/quern-alerts.test.yml'));
  return runTool(PROMTOOL, ['test', 'rules', 'tests/quern-alerts.test.yml'], dir);
}

describe('Prometheus configuration and alert rules (promtool)', () => {
  it('promtool check config accepts prometheus.yml and finds the rule files next to it', async () => {
    const result = await runTool(PROMTOOL, ['check', 'config', PROMETHEUS_CONFIG]);
    expectSuccess('promtool check config', result);
    // rule_files resolve relative to the config file: a wrong path would find 0 files and still pass.
    expect(result.output).toMatch(/SUCCESS: [1-9]\d* rule files found/);
  });

  it('promtool check rules accepts every rule', async () => {
    const result = await runTool(PROMTOOL, ['check', 'rules', RULES_FILE]);
    expectSuccess('promtool check rules', result);
    expect(result.output).toContain(`SUCCESS: ${alertRules().length} rules found`);
  });

  it('promtool test rules passes the unit tests', async () => {
    const result = await runTool(PROMTOOL, ['test', 'rules', RULE_TESTS_FILE]);
    expectSuccess('promtool test rules', result);
    expect(result.output).toContain('SUCCESS');
  });

  it('every alert has a severity, a summary, a description and its runbook anchor', () => {
    const rules = alertRules();
    expect(rules.length).toBeGreaterThanOrEqual(8);
    for (const rule of rules) {
      expect(rule.alert, JSON.stringify(rule)).toMatch(/^Quern[A-Za-z]+$/);
      expect(['warning', 'critical'], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      expect(rule.annotations?.description, rule.alert).toBeTruthy();
      expect(rule.annotations?.runbook, rule.alert).toBe(`docs/operations.md#alert-${rule.alert.toLowerCase()}`);
    }
  });

  it('every alert has a unit test where it fires and one where it does not', () => {
    const doc = parse(readFileSync(RULE_TESTS_FILE, 'utf8')) as RuleTests;
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of alertRules()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert} has no firing case`,
      ).toBe(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert} has no quiet case`,
      ).toBe(true);
    }
  });

  it('the job names the rules select on are the scrape config’s', () => {
    const config = parse(readFileSync(PROMETHEUS_CONFIG, 'utf8')) as { scrape_configs: { job_name: string }[] };
    const jobs = new Set(config.scrape_configs.map((s) => s.job_name));
    const used = alertRules().flatMap((r) => [...r.expr.matchAll(/\bjob="([^"]+)"/g)].map((m) => m[1]));
    expect(used.length).toBeGreaterThan(0);
    for (const job of used) expect([...jobs], `job "${job}" in the rules`).toContain(job);
  });

  // The unit tests must be able to fail: with an alert that never fires, or fires without waiting
  // for its `for:` duration, `promtool test rules` has to report it.
  const mutations: Record<string, (rule: AlertRule) => void> = {
    'never fires': (rule) => {
      rule.expr = 'vector(1) == 0';
    },
    'fires at once, without its for: duration': (rule) => {
      rule.for = undefined;
    },
  };
  it.concurrent.each(alertRules().flatMap((r) => Object.keys(mutations).map((m) => [r.alert, m] as const)))(
    'the unit tests catch a %s that %s',
    async (alert, mutation) => {
      const result = await testRulesWithMutation(alert, mutations[mutation] ?? (() => {}));
      expect(result.code, result.output).not.toBe(0);
      expect(result.output).toContain(alert);
    },
  );
});
