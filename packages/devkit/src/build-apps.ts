/**
 * `pnpm build`: bundles each app for containers: `apps/api/dist/main.js` and `dist/cli.js` (the
 * operator CLI, `node dist/cli.js keys create …`), `apps/worker/dist/main.js` and the worker's
 * `inference-thread.mjs`. Workspace packages (source-only TypeScript) are bundled in, so the
 * image needs none of them at run time; npm dependencies stay external and come from the image's
 * production node_modules (`pnpm deploy --prod`), because some load files of their own by path
 * (swagger-ui-dist, Bull Board's UI, onnxruntime-node's native binding).
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

/** The entry points of each app: `src/<name>.ts` becomes `dist/<name>.js`. */
const ENTRIES = {
  api: ['main', 'cli'],
  worker: ['main'],
} as const;

async function buildApp(app: keyof typeof ENTRIES): Promise<void> {
  const outDir = join(REPO_ROOT, 'apps', app, 'dist');
  mkdirSync(outDir, { recursive: true });
  for (const entry of ENTRIES[app]) {
    await build({
      entryPoints: [join(REPO_ROOT, 'apps', app, 'src', `${entry}.ts`)],
      outfile: join(outDir, `${entry}.js`),
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'esm',
      sourcemap: true,
      // Every npm dependency of the app and of the workspace packages it bundles must be in the
      // app's production node_modules: the deploy step installs them flat (node-linker=hoisted).
      external: externalDeps(`apps/${app}`, 'packages/shared'),
      // Some CommonJS dependencies call require(); give the ESM bundle one.
      banner: {
        js: "import { createRequire as __quernCreateRequire } from 'node:module'; const require = __quernCreateRequire(import.meta.url);",
      },
      logLevel: 'warning',
    });
    process.stdout.write(`built apps/${app}/dist/${entry}.js\n`);
  }
  if (app === 'worker') {
    // Loaded by URL at run time (a worker_threads entry), so it is copied, not bundled, with the
    // module it imports.
    for (const file of ['inference-thread.mjs', 'ort-batch.mjs']) {
      copyFileSync(join(REPO_ROOT, 'apps/worker/src', file), join(outDir, file));
    }
  }
}

await buildApp('api');
await buildApp('worker');
