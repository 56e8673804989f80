import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { describe, expect, it } from 'vitest';
import {
  DockerIgnore,
  envOf,
  execForm,
  flagsAndArgs,
  parseDockerfile,
  runCommand,
  type Stage,
  stageChain,
} from './support/docker-context';

/**
 * The Dockerfile read the way Docker reads it (dockerfile-ast, the parser of the Docker language
 * server): two targets that run as a non-root user, each with a HEALTHCHECK on its real probe
 * endpoint, built from sources that exist in the build context that .dockerignore leaves.
 */
const { stages, args } = parseDockerfile();
const ignore = DockerIgnore.load();
const contextFiles = ignore.files();

const TARGETS = {
  api: { port: '8000', health: '/health', portEnv: 'PORT' },
  worker: { port: '9100', health: '/health', portEnv: 'QUERN_WORKER_PORT' },
} as const;

function instructions(chain: readonly Stage[], keyword: string) {
  return chain.flatMap((s) => s.instructions.filter((i) => i.getKeyword() === keyword));
}

describe('deployment/docker/Dockerfile', () => {
  it('has a build stage and two slim Node 20 targets, api and worker', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime', 'api', 'worker']);
    expect(args.NODE_VERSION).toBe('20-bookworm-slim');
    expect(stageChain(stages, 'api').map((s) => s.name)).toEqual(['runtime', 'api']);
    expect(stageChain(stages, 'worker').map((s) => s.name)).toEqual(['runtime', 'worker']);
    for (const target of ['build', 'runtime']) {
      expect(stages.find((s) => s.name === target)?.from).toBe('node:20-bookworm-slim');
    }
  });

  for (const [target, spec] of Object.entries(TARGETS)) {
    describe(`target ${target}`, () => {
      const chain = stageChain(stages, target);

      it('runs as a non-root user, given by number (Kubernetes runAsNonRoot can check it)', () => {
        const users = instructions(chain, 'USER').map((u) => u.getArgumentsContent()?.trim() ?? '');
        const effective = users.at(-1);
        expect(effective).toMatch(/^[1-9]\d*(:\d+)?$/);
        expect(effective?.split(':')[0]).not.toBe('0');
      });

      it(`has a HEALTHCHECK on ${spec.health} at port ${spec.port}, exposes that port and runs the bundle`, () => {
        const checks = instructions(chain, 'HEALTHCHECK');
        expect(checks).toHaveLength(1);
        const check = checks[0];
        if (!check) throw new Error('no HEALTHCHECK');
        const { flags } = flagsAndArgs(check);
        expect(Object.keys(flags).sort()).toEqual(['interval', 'retries', 'start-period', 'timeout']);
        const cmd = execForm(check).join(' ');
        expect(cmd).toContain(`process.env.${spec.portEnv}||${spec.port}`);
        expect(cmd).toContain(`'${spec.health}'`);
        expect(instructions(chain, 'EXPOSE').map((e) => e.getArgumentsContent()?.trim())).toEqual([spec.port]);
        const env = Object.assign({}, ...instructions(chain, 'ENV').map(envOf)) as Record<string, string>;
        expect(env).toMatchObject({
          NODE_ENV: 'production',
          QUERN_MODELS_DIR: '/app/models',
          [spec.portEnv]: spec.port,
        });
        const cmds = instructions(chain, 'CMD');
        expect(cmds.length).toBeGreaterThan(0);
        expect(execForm(cmds.at(-1) as (typeof cmds)[number])).toEqual(['node', 'dist/main.js']);
      });

      it('takes only built output from the build stage: no sources, no dev dependencies, no installs', () => {
        for (const copy of instructions(chain, 'COPY')) {
          const { flags, args: paths } = flagsAndArgs(copy);
          expect(flags.from).toBe('build');
          // Root owns the files; the process (uid 1000) can read them, not change them.
          expect(flags.chown).toBe('0:0');
          for (const source of paths.slice(0, -1)) expect(source).toMatch(/^\/out\//);
        }
        expect(instructions(chain, 'RUN')).toEqual([]);
        expect(instructions(chain, 'ADD')).toEqual([]);
      });
    });
  }

  it('the worker gets the models, the API the manifest, both from what the build stage wrote', () => {
    const copies = (target: string) =>
      instructions(stageChain(stages, target), 'COPY').map((c) => flagsAndArgs(c).args.join(' '));
    expect(copies('worker')).toEqual(['/out/worker /app', '/out/models /app/models']);
    expect(copies('api')).toEqual(['/out/api /app', '/out/api-models /app/models']);
    const build = stages.find((s) => s.name === 'build');
    const runs = (build?.instructions ?? []).filter((i) => i.getKeyword() === 'RUN').map(runCommand);
    const script = runs.join('\n');
    for (const out of ['"/out/$' + '{app}"', '/out/models/', '/out/api-models/']) expect(script).toContain(out);
    expect(script).toContain('cp models/manifest.json models/*.onnx /out/models/');
    expect(script).toContain('deploy --prod --legacy --config.node-linker=hoisted');
  });

  it('copies every workspace package’s package.json before the first install (a frozen install needs all)', () => {
    // pnpm-workspace.yaml: apps/*, packages/*, models, tests.
    const workspace = [
      ...['apps', 'packages'].flatMap((dir) =>
        readdirSync(join(REPO_ROOT, dir)).map((name) => `${dir}/${name}/package.json`),
      ),
      'models/package.json',
      'tests/package.json',
    ].filter((path) => existsSync(join(REPO_ROOT, path)));
    expect(workspace).toContain('packages/client/package.json');
    const build = stages.find((s) => s.name === 'build')?.instructions ?? [];
    const install = build.findIndex((i) => i.getKeyword() === 'RUN' && runCommand(i).includes('pnpm install'));
    expect(install).toBeGreaterThan(0);
    const copied = build
      .slice(0, install)
      .filter((i) => i.getKeyword() === 'COPY')
      .flatMap((i) => flagsAndArgs(i).args.slice(0, -1));
    for (const path of workspace) expect(copied, path).toContain(path);
  });

  it('every COPY source of the build stage is in the build context .dockerignore leaves', () => {
    const build = stages.find((s) => s.name === 'build');
    const copies = (build?.instructions ?? []).filter((i) => i.getKeyword() === 'COPY');
    expect(copies.length).toBeGreaterThan(1);
    for (const copy of copies) {
      const { flags, args: paths } = flagsAndArgs(copy);
      expect(flags.from).toBeUndefined();
      for (const source of paths.slice(0, -1)) {
        if (source === '.') continue;
        expect(existsSync(join(REPO_ROOT, source)), `${source} exists`).toBe(true);
        expect(contextFiles, `${source} is in the build context`).toContain(source);
      }
    }
  });

  it('the build context holds what the build needs and no secrets, state or installed output', () => {
    for (const needed of [
      'pnpm-lock.yaml',
      'apps/api/src/main.ts',
      'apps/api/src/cli.ts',
      'apps/worker/src/main.ts',
      'apps/worker/src/inference-thread.mjs',
      'packages/shared/src/index.ts',
      'packages/devkit/src/build-apps.ts',
      'models/manifest.json',
      'models/cars-mpg.onnx',
      'models/mlp-large.onnx',
      'tests/package.json',
    ]) {
      expect(contextFiles).toContain(needed);
    }
    for (const path of ['.env', '.env.production', 'apps/api/node_modules/x', 'apps/api/dist/main.js', '.git/HEAD']) {
      expect(ignore.excludes(path), path).toBe(true);
    }
    expect(contextFiles.filter((f) => /(^|\/)(node_modules|dist|\.data|\.git)\//.test(f))).toEqual([]);
    expect(contextFiles.filter((f) => f.startsWith('tests/') && f !== 'tests/package.json')).toEqual([]);
  });
});
