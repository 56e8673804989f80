import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { configSchema } from '@quern/shared';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { kustomizeBuild } from './support/kustomize';

/** docs/deployment.md names files, settings and numbers that must be the ones in the repository. */
const doc = readFileSync(join(REPO_ROOT, 'docs/deployment.md'), 'utf8');
const code = [...doc.matchAll(/`([^`\n]+)`/g)].map((m) => m[1] as string);

describe('docs/deployment.md', () => {
  it('names only files that exist (build output aside)', () => {
    const paths = code.filter((c) =>
      /^(deployment|tests\/scale|docs|packages|apps|models)\/[\w./-]+$|^\.dockerignore$|^docker-compose\.yml$/.test(c),
    );
    expect(paths.length).toBeGreaterThan(10);
    // Build output (`apps/*/dist/…`) exists only after `pnpm build`.
    expect(
      paths.filter((p) => !p.includes('/dist/')).filter((p) => !existsSync(join(REPO_ROOT, p.replace(/\/$/, '')))),
    ).toEqual([]);
  });

  it('names only settings the config schema has (or the compose and Grafana ones)', () => {
    const known = new Set([
      ...Object.keys(configSchema('all').in.shape),
      'QUERN_API_PORT',
      'QUERN_IMAGE_TAG',
      'GRAFANA_ADMIN_USER',
      'GRAFANA_ADMIN_PASSWORD',
    ]);
    const names = [...doc.matchAll(/\b((?:QUERN|REDIS)_[A-Z0-9_]*[A-Z0-9])\b/g)].map((m) => m[1] as string);
    // `QUERN_RATE_*` style wildcards name a family.
    const unknown = names.filter((n) => !known.has(n) && ![...known].some((k) => k.startsWith(`${n}_`)));
    expect([...new Set(unknown)]).toEqual([]);
  });

  it('gives the numbers the manifests and compose file use', () => {
    const base = kustomizeBuild(join(REPO_ROOT, 'deployment/kubernetes/base'));
    const worker = base.find((o) => o.kind === 'Deployment' && o.metadata.name === 'quern-worker') as unknown as {
      spec: { template: { spec: { terminationGracePeriodSeconds: number } } };
    };
    const grace = worker.spec.template.spec.terminationGracePeriodSeconds;
    expect(doc).toContain(`terminationGracePeriodSeconds: ${grace}`);
    const so = base.find((o) => o.kind === 'ScaledObject') as unknown as {
      spec: { minReplicaCount: number; maxReplicaCount: number; triggers: { metadata: Record<string, string> }[] };
    };
    expect(doc).toContain(`target is ${so.spec.triggers[0]?.metadata.threshold} waiting jobs per worker replica`);
    expect(doc).toContain(`between ${so.spec.minReplicaCount} and ${so.spec.maxReplicaCount} replicas`);
    expect(doc).toContain(String(so.spec.triggers[0]?.metadata.query));
    const compose = parse(readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
      services: { worker: { deploy: { replicas: number }; stop_grace_period: string } };
    };
    expect(doc).toContain(`deploy.replicas: ${compose.services.worker.deploy.replicas}`);
    expect(doc).toContain(`stop_grace_period: ${compose.services.worker.stop_grace_period}`);
    // The first-key command is the one the compose file's header shows.
    expect(doc).toContain('docker compose run --rm api node dist/cli.js keys create --name admin --tier premium');
    expect(readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8')).toContain(
      'docker compose run --rm api node dist/cli.js keys create --name admin --tier premium',
    );
    // The measured figures come from the benchmark: the guide points there rather than guessing,
    // and the section it links to exists.
    expect(doc).toContain('(operations.md#what-does-it-take-to-serve-100-000-requests-per-second)');
    expect(readFileSync(join(REPO_ROOT, 'docs/operations.md'), 'utf8')).toContain(
      '### What does it take to serve 100 000 requests per second?',
    );
    expect(doc).toContain('[benchmarks.md](benchmarks.md)');
  });
});
