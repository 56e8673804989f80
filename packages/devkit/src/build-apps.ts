/**
 * `pnpm build`: bundles each app into `apps/<app>/dist/main.js` for containers. Workspace
 * packages (source-only TypeScript) are bundled in; npm dependencies stay external and come
 * from the image's production node_modules.
 */
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { REPO_ROOT } from './service-process';

function externalDeps(...packageDirs: string[]): string[] {
  const names = new Set<string>();
  for (const dir of packageDirs) {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, dir, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    for (const name of Object.keys(pkg.dependencies ?? {})) if (!name.startsWith('@quern/')) names.add(name);
  }
  return [...names];
}

async function buildApp(app: 'api' | 'worker'): Promise<void> {
  const outDir = join(REPO_ROOT, 'apps', app, 'dist');
  mkdirSync(outDir, { recursive: true });
  await build({
    entryPoints: [join(REPO_ROOT, 'apps', app, 'src', 'main.ts')],
    outfile: join(outDir, 'main.js'),
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    sourcemap: true,
    external: externalDeps(`apps/${app}`, 'packages/shared'),
    // Some CommonJS dependencies call require(); give the ESM bundle one.
    banner: {
      js: "import { createRequire as __quernCreateRequire } from 'node:module'; const require = __quernCreateRequire(import.meta.url);",
    },
    logLevel: 'warning',
  });
  if (app === 'worker') {
    // Loaded by URL at run time (a worker_threads entry), so it is copied, not bundled.
    copyFileSync(join(REPO_ROOT, 'apps/worker/src/inference-thread.mjs'), join(outDir, 'inference-thread.mjs'));
  }
  process.stdout.write(`built apps/${app}/dist/main.js\n`);
}

await buildApp('api');
await buildApp('worker');
