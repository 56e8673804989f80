import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { REPO_ROOT } from '@quern/devkit';
import { CONFIG_VARIABLES, configSchema, loadConfig, MetricNames } from '@quern/shared';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { unknownFieldErrors } from './support/k8s-typecheck';
import { type K8sObject, kubectlKustomize, kustomizeBuild, objectKey } from './support/kustomize';

/**
 * The Kubernetes manifests, built as kustomize builds them, every object validated against the
 * Kubernetes OpenAPI schemas (kubernetes-models) or, for KEDA's ScaledObject, KEDA's CRD schema
 * and the rules KEDA's admission webhook applies; then the things that make the deployment work:
 * probes on the real endpoints, resources, a restricted security context, a grace period longer
 * than the drain, scaling on the queue depth the API exports, settings the config schema knows.
 */
const K8S = join(REPO_ROOT, 'deployment/kubernetes');
const BUILDS = { base: join(K8S, 'base'), production: join(K8S, 'overlays/production') } as const;

type Json = Record<string, unknown>;
type Container = Json & {
  name: string;
  image: string;
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: Json[];
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  securityContext: Json & { capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string }[];
  ports?: { name: string; containerPort: number }[];
};
type PodSpec = Json & { containers: Container[]; volumes?: (Json & { name: string })[]; securityContext: Json };

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
};

/** Fields of a ScaledObject's spec that KEDA documents (keda.sh ScaledObject specification). */
const SCALED_OBJECT_FIELDS = [
  'scaleTargetRef',
  'pollingInterval',
  'cooldownPeriod',
  'initialCooldownPeriod',
  'idleReplicaCount',
  'minReplicaCount',
  'maxReplicaCount',
  'fallback',
  'advanced',
  'triggers',
];
const TRIGGER_FIELDS = ['type', 'metadata', 'name', 'metricType', 'useCachedMetrics', 'authenticationRef'];
/** Metadata of KEDA's prometheus scaler. */
const PROMETHEUS_METADATA = [
  'serverAddress',
  'query',
  'threshold',
  'activationThreshold',
  'namespace',
  'customHeaders',
  'ignoreNullValues',
  'queryParameters',
  'unsafeSsl',
  'timeout',
];

const configKeys = new Set(Object.keys(configSchema('all').in.shape));

function find<T = Json>(objects: readonly K8sObject[], kind: string, name: string): K8sObject & T {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`${kind}/${name} not in the build`);
  return found as K8sObject & T;
}

function podSpec(obj: K8sObject): PodSpec {
  return ((obj.spec as Json).template as Json).spec as PodSpec;
}

function templateLabels(obj: K8sObject): Record<string, string> {
  return (((obj.spec as Json).template as Json).metadata as Json).labels as Record<string, string>;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** CPU quantity in cores ("2", "500m"). */
function cores(q: string): number {
  return q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q);
}

/** What a container's process sees: its ConfigMap, the secret's keys, then its own env. */
function containerEnv(objects: readonly K8sObject[], container: Container, secret: Record<string, string>) {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const cm = (from.configMapRef as Json | undefined)?.name;
    const sec = (from.secretRef as Json | undefined)?.name;
    if (cm) Object.assign(env, find<{ data: Record<string, string> }>(objects, 'ConfigMap', String(cm)).data);
    if (sec) Object.assign(env, secret);
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.secretKeyRef;
    const value = ref ? (secret as Record<string, string | undefined>)[ref.key] : undefined;
    if (value !== undefined) env[e.name] = value;
  }
  return env;
}

/** A secret as an operator would create it (real values of the right shape). */
const REAL_SECRET = {
  QUERN_JWT_KEYS: 'k1:0123456789abcdef0123456789abcdef0123',
  QUERN_SECRETS_KEY: '0123456789abcdef0123456789abcdef0123',
};

describe.each(Object.entries(BUILDS))('kustomize build %s', (label, dir) => {
  const objects = kustomizeBuild(dir);

  it('gives the same objects as `kubectl kustomize` (fails when kubectl is missing)', () => {
    const real = kubectlKustomize(dir);
    const byKey = (list: readonly K8sObject[]) => Object.fromEntries(list.map((o) => [objectKey(o), o]));
    expect(byKey(objects)).toEqual(byKey(real));
  });

  it('validates every object against its schema', () => {
    const kinds = objects.map((o) => `${o.apiVersion}/${o.kind}`);
    expect(kinds.filter((k) => !MODELS[k])).toEqual([]);
    for (const obj of objects) {
      const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
      if (!Model) continue;
      expect(() => new Model(obj as never).validate(), objectKey(obj)).not.toThrow();
    }
  });

  it('has no field its kind does not define (unknown fields pass the schemas, not the types)', async () => {
    expect(await unknownFieldErrors(objects)).toEqual([]);
  });

  it('puts everything in the quern namespace, which enforces the restricted pod security standard', () => {
    const ns = find(objects, 'Namespace', 'quern');
    expect(ns.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('restricted');
    for (const obj of objects.filter((o) => o.kind !== 'Namespace')) {
      expect(obj.metadata.namespace, objectKey(obj)).toBe('quern');
    }
    // No secret is part of the build: it is created apart (see secret.example.yaml).
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
  });

  it('probes the API on /ready and /health, the worker on /ready and /health at 9100', () => {
    const probes = (name: string) => {
      const c = podSpec(find(objects, 'Deployment', name)).containers[0] as Container;
      const port = (probe: string) => {
        const get = (c[probe] as Json).httpGet as { path: string; port: string | number };
        const named = c.ports?.find((p) => p.name === get.port);
        return `${get.path}@${named ? named.containerPort : get.port}`;
      };
      return { ready: port('readinessProbe'), live: port('livenessProbe'), startup: port('startupProbe') };
    };
    expect(probes('quern-api')).toEqual({ ready: '/ready@8000', live: '/health@8000', startup: '/health@8000' });
    expect(probes('quern-worker')).toEqual({
      ready: '/ready@9100',
      live: '/health@9100',
      startup: '/health@9100',
    });
  });

  it('runs every container non-root, read-only, without privileges or capabilities, with resources', () => {
    const workloads = objects.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet');
    expect(workloads.length).toBeGreaterThanOrEqual(2);
    for (const obj of workloads) {
      const spec = podSpec(obj);
      const key = objectKey(obj);
      expect(spec.automountServiceAccountToken, key).toBe(false);
      expect(spec.securityContext, key).toMatchObject({
        runAsNonRoot: true,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(Number(spec.securityContext.runAsUser), key).toBeGreaterThan(0);
      for (const c of spec.containers) {
        expect(c.securityContext, key).toMatchObject({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        });
        for (const what of ['requests', 'limits'] as const) {
          expect(c.resources[what]?.cpu, `${key} ${what}.cpu`).toBeDefined();
          expect(c.resources[what]?.memory, `${key} ${what}.memory`).toBeDefined();
        }
        // Every mount has its volume (or a claim template).
        const claims = ((obj.spec as Json).volumeClaimTemplates as { metadata: { name: string } }[] | undefined) ?? [];
        const volumes = new Set([...(spec.volumes ?? []).map((v) => v.name), ...claims.map((v) => v.metadata.name)]);
        for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name), `${key} ${m.mountPath}`).toBe(true);
      }
    }
    // The app images run as uid 1000 (deployment/docker/Dockerfile); /tmp is a writable emptyDir.
    for (const name of ['quern-api', 'quern-worker']) {
      const spec = podSpec(find(objects, 'Deployment', name));
      expect(spec.securityContext.runAsUser).toBe(1000);
      const tmp = spec.containers[0]?.volumeMounts?.find((m) => m.mountPath === '/tmp');
      expect(spec.volumes?.find((v) => v.name === tmp?.name)?.emptyDir).toBeDefined();
    }
  });

  it('gives workers longer to stop than their drain deadline, and one inference thread per CPU', () => {
    const worker = find(objects, 'Deployment', 'quern-worker');
    const spec = podSpec(worker);
    const container = spec.containers[0] as Container;
    const env = containerEnv(objects, container, REAL_SECRET);
    const drain = Number(env.QUERN_SHUTDOWN_TIMEOUT_MS ?? 30_000) / 1000;
    // The worker exits by itself at most 5 s after the drain deadline.
    expect(Number(spec.terminationGracePeriodSeconds)).toBeGreaterThan(drain + 5);
    expect(Number(env.QUERN_WORKER_THREADS)).toBe(cores(container.resources.limits.cpu as string));
    expect(cores(container.resources.requests.cpu as string)).toBe(cores(container.resources.limits.cpu as string));
  });

  it('gives the API and the worker a configuration the config schema accepts (with a real secret)', () => {
    for (const name of ['quern-api', 'quern-worker']) {
      const container = podSpec(find(objects, 'Deployment', name)).containers[0] as Container;
      const env = containerEnv(objects, container, REAL_SECRET);
      expect(Object.keys(env).filter((k) => !configKeys.has(k))).toEqual([]);
      // Token-signing keys go to the API alone.
      expect('QUERN_JWT_KEYS' in env).toBe(name === 'quern-api');
      const role = name === 'quern-api' ? 'api' : 'worker';
      const config = loadConfig(env, role);
      expect(config.NODE_ENV).toBe('production');
      expect(config.HOST).toBe('0.0.0.0');
      expect('PORT' in config ? config.PORT : config.QUERN_WORKER_PORT).toBe(role === 'api' ? 8000 : 9100);
      // Each process is handed only variables of its own schema.
      expect(Object.keys(env).filter((k) => !CONFIG_VARIABLES[role].includes(k))).toEqual([]);
    }
  });

  it('serves the API through a Service, scales it on CPU and keeps one pod through disruptions', () => {
    const api = find(objects, 'Deployment', 'quern-api');
    const labels = templateLabels(api);
    const service = find<{ spec: { selector: Record<string, string>; ports: { targetPort: string }[] } }>(
      objects,
      'Service',
      'quern-api',
    );
    expect(selects(service.spec.selector, labels)).toBe(true);
    const names = (podSpec(api).containers[0]?.ports ?? []).map((p) => p.name);
    for (const p of service.spec.ports) expect(names).toContain(p.targetPort);
    const hpa = find<{ spec: Json & { scaleTargetRef: Json; minReplicas: number } }>(
      objects,
      'HorizontalPodAutoscaler',
      'quern-api',
    );
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'quern-api' });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    // Autoscaled workloads leave `replicas` to their autoscaler.
    expect((api.spec as Json).replicas).toBeUndefined();
    expect((find(objects, 'Deployment', 'quern-worker').spec as Json).replicas).toBeUndefined();
    for (const name of ['quern-api', 'quern-worker']) {
      const pdb = find<{ spec: { selector: { matchLabels: Record<string, string> } } }>(
        objects,
        'PodDisruptionBudget',
        name,
      );
      expect(selects(pdb.spec.selector.matchLabels, templateLabels(find(objects, 'Deployment', name)))).toBe(true);
    }
  });

  it('scales workers with KEDA on the queue depth the API exports, within the rules KEDA enforces', () => {
    const so = find<{ spec: Json & { triggers: Json[]; fallback?: Json; scaleTargetRef: Json } }>(
      objects,
      'ScaledObject',
      'quern-worker',
    );
    const spec = so.spec;
    expect(Object.keys(spec).filter((k) => !SCALED_OBJECT_FIELDS.includes(k))).toEqual([]);
    expect(spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'quern-worker' });
    find(objects, 'Deployment', String(spec.scaleTargetRef.name));
    const min = Number(spec.minReplicaCount ?? 0);
    const max = Number(spec.maxReplicaCount ?? 100);
    // The API is ready only while a worker heartbeat is fresh: never scale workers to zero.
    expect(min).toBeGreaterThanOrEqual(1);
    expect(min).toBeLessThanOrEqual(max);
    for (const trigger of spec.triggers) {
      expect(Object.keys(trigger).filter((k) => !TRIGGER_FIELDS.includes(k))).toEqual([]);
      for (const value of Object.values(trigger.metadata as Json)) expect(typeof value).toBe('string');
      // KEDA's webhook (CheckFallbackValid): fallback needs AverageValue triggers, no cpu/memory ones.
      if (spec.fallback) {
        expect(['cpu', 'memory']).not.toContain(trigger.type);
        expect(trigger.metricType).toBe('AverageValue');
      }
    }
    const prometheus = spec.triggers.filter((t) => t.type === 'prometheus');
    expect(prometheus).toHaveLength(1);
    const metadata = prometheus[0]?.metadata as Record<string, string>;
    expect(Object.keys(metadata).filter((k) => !PROMETHEUS_METADATA.includes(k))).toEqual([]);
    expect(metadata.serverAddress).toMatch(/^https?:\/\//);
    expect(Number(metadata.threshold)).toBeGreaterThan(0);
    // Jobs waiting in any model queue (priority jobs are in `prioritized`), counted once even
    // though every API replica exports the same gauge.
    expect(metadata.query).toBe(
      `sum(max by (model, state) (${MetricNames.queueJobs}{service="api", state=~"waiting|prioritized"}))`,
    );
    if (spec.fallback) expect(Number(spec.fallback.replicas)).toBeGreaterThanOrEqual(min);
  });

  it('annotates pods for Prometheus on the ports their metrics are served at', () => {
    for (const [name, port] of [
      ['quern-api', '8000'],
      ['quern-worker', '9100'],
    ] as const) {
      const annotations = (((find(objects, 'Deployment', name).spec as Json).template as Json).metadata as Json)
        .annotations as Record<string, string>;
      expect(annotations).toEqual({
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': port,
        'prometheus.io/path': '/metrics',
      });
      expect(templateLabels(find(objects, 'Deployment', name)).app).toBe(name);
    }
  });

  if (label === 'production') {
    it('adds the durable Redis REDIS_URL points at, and pins the images', () => {
      const redis = find(objects, 'StatefulSet', 'redis');
      const args = (podSpec(redis).containers[0]?.args ?? []) as string[];
      const flag = (name: string) => args[args.indexOf(name) + 1];
      expect(flag('--appendonly')).toBe('yes');
      expect(flag('--appendfsync')).toBe('everysec');
      expect(flag('--maxmemory-policy')).toBe('noeviction');
      expect(((redis.spec as Json).volumeClaimTemplates as Json[]).length).toBe(1);
      const url = new URL(
        find<{ data: Record<string, string> }>(objects, 'ConfigMap', 'quern-config').data.REDIS_URL ?? '',
      );
      const service = find<{ spec: { selector: Record<string, string>; ports: { port: number }[] } }>(
        objects,
        'Service',
        url.hostname,
      );
      expect(service.spec.ports.map((p) => p.port)).toContain(Number(url.port));
      expect(selects(service.spec.selector, templateLabels(redis))).toBe(true);
      for (const name of ['quern-api', 'quern-worker']) {
        expect(podSpec(find(objects, 'Deployment', name)).containers[0]?.image).toMatch(
          /^[\w.-]+\/[\w./-]+:\d+\.\d+\.\d+$/,
        );
      }
    });
  }
});

describe('base/secret.example.yaml', () => {
  const text = readFileSync(join(K8S, 'base/secret.example.yaml'), 'utf8');
  const secret = parse(text) as K8sObject & { stringData: Record<string, string> };

  it('is a valid Secret, clearly an example, and is not part of any build', async () => {
    expect(() => new Secret(secret as never).validate()).not.toThrow();
    expect(await unknownFieldErrors([secret])).toEqual([]);
    expect(text.split('\n')[0]).toMatch(/EXAMPLE ONLY/);
    for (const dir of Object.values(BUILDS)) {
      expect(kustomizeBuild(dir).filter((o) => o.kind === 'Secret')).toEqual([]);
    }
    const kustomization = readFileSync(join(K8S, 'base/kustomization.yaml'), 'utf8');
    expect(kustomization).not.toMatch(/^\s*-\s*secret\.example\.yaml/m);
  });

  it('names only settings the config knows, and its placeholders are refused if applied as they are', () => {
    expect(Object.keys(secret.stringData).filter((k) => !configKeys.has(k))).toEqual([]);
    const configMap = find<{ data: Record<string, string> }>(kustomizeBuild(BUILDS.base), 'ConfigMap', 'quern-config');
    expect(() => loadConfig({ ...configMap.data, ...secret.stringData })).toThrow(/QUERN_JWT_KEYS/);
    expect(() => loadConfig({ ...configMap.data, ...secret.stringData })).toThrow(/QUERN_SECRETS_KEY/);
    expect(() => loadConfig({ ...configMap.data, ...REAL_SECRET })).not.toThrow();
  });
});
