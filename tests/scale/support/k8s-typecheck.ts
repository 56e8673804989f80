import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '@quern/devkit';
import type { K8sObject } from './kustomize';

const run = promisify(execFile);

/**
 * The OpenAPI schemas leave objects open: a misspelt field (`readinesProbe`) validates and is then
 * silently ignored by the cluster. TypeScript is strict where they are not: each object is written
 * out as an object literal that must `satisfies` the kubernetes-models (or KEDA) interface of its
 * kind, and `tsc` reports every property that interface does not have.
 */
const MODULES: Record<string, string> = {
  'v1/Namespace': 'kubernetes-models/v1/Namespace',
  'v1/ConfigMap': 'kubernetes-models/v1/ConfigMap',
  'v1/Secret': 'kubernetes-models/v1/Secret',
  'v1/Service': 'kubernetes-models/v1/Service',
  'v1/ServiceAccount': 'kubernetes-models/v1/ServiceAccount',
  'apps/v1/Deployment': 'kubernetes-models/apps/v1/Deployment',
  'apps/v1/StatefulSet': 'kubernetes-models/apps/v1/StatefulSet',
  'autoscaling/v2/HorizontalPodAutoscaler': 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler',
  'policy/v1/PodDisruptionBudget': 'kubernetes-models/policy/v1/PodDisruptionBudget',
  'keda.sh/v1alpha1/ScaledObject': '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject',
};

/** Compiler errors for objects with fields their kind does not have (empty when all are known). */
export async function unknownFieldErrors(objects: readonly K8sObject[]): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'quern-k8s-types-'));
  try {
    const requireFromTests = createRequire(join(REPO_ROOT, 'tests/package.json'));
    const packageDir = (name: string) => dirname(requireFromTests.resolve(`${name}/package.json`));
    const lines: string[] = [];
    objects.forEach((obj, i) => {
      const module = MODULES[`${obj.apiVersion}/${obj.kind}`];
      if (!module) throw new Error(`no type for ${obj.apiVersion} ${obj.kind}`);
      lines.push(`import type { I${obj.kind} as T${i} } from '${module}';`);
      lines.push(`// ${obj.kind}/${obj.metadata.name}`);
      lines.push(`export const o${i} = ${JSON.stringify(obj, null, 2)} satisfies T${i};`);
    });
    writeFileSync(join(dir, 'objects.ts'), `${lines.join('\n')}\n`);
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'preserve',
          moduleResolution: 'bundler',
          skipLibCheck: true,
          types: [],
          paths: {
            'kubernetes-models/*': [`${packageDir('kubernetes-models')}/*`],
            '@kubernetes-models/keda/*': [`${packageDir('@kubernetes-models/keda')}/*`],
          },
        },
        files: ['objects.ts'],
      }),
    );
    try {
      await run(join(REPO_ROOT, 'node_modules/.bin/tsc'), ['-p', join(dir, 'tsconfig.json')], { cwd: dir });
      return [];
    } catch (err) {
      const out = (err as { stdout?: string }).stdout ?? String(err);
      const source = lines.join('\n').split('\n');
      // Name the object each error is in (the comment line above its literal).
      return out
        .split('\n')
        .filter((l) => l.includes('error TS'))
        .map((l) => {
          const line = Number(/\((\d+),/.exec(l)?.[1] ?? 0);
          const owner = source
            .slice(0, line)
            .reverse()
            .find((s) => s.startsWith('// '));
          return `${owner?.slice(3) ?? '?'}: ${l.slice(l.indexOf('error TS'))}`;
        });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
