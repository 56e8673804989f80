/**
 * Entry point of the model build: `pnpm models:build` (= `tsx models/build/build-models.ts [--out DIR]`).
 *
 * Writes `cars-mpg.onnx`, `mlp-large.onnx` and `cars-mpg.eval.json` into the output directory (default: the
 * `models/` folder). When writing into `models/` itself it also refreshes the `sha256` fields of
 * `models/manifest.json`, because the worker refuses to serve a file whose hash does not match. Building into another
 * directory never touches the manifest, so tests can rebuild into a temp dir and compare bytes.
 *
 * The build is a pure function of the sources and the `vega-datasets` file: running it twice, on any machine,
 * produces byte-identical files.
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ModelManifest } from '@quern/shared';
import { buildCarsMpg } from './cars-mpg';
import { formatJson } from './json-format';
import { buildMlpLarge } from './mlp-large';
import { sha256Hex } from './sha256';

/** The `models/` folder (parent of this `build/` folder): the default output and the home of `manifest.json`. */
export const MODELS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** One written file. */
export interface BuiltFile {
  file: string;
  bytes: number;
  sha256: string;
}

/** Summary of a build run. */
export interface BuildResult {
  outDir: string;
  files: BuiltFile[];
  holdoutRmse: number;
  holdoutMae: number;
  trainRmse: number;
  /** What happened to `manifest.json`: only builds into the models folder look at it. */
  manifest: 'updated' | 'up-to-date' | 'not-touched';
}

/** Writes via a temp file + rename so a worker reading the folder never sees a half-written model. */
function writeAtomic(path: string, data: Uint8Array | string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/**
 * Builds both models into `outDir` and, if `outDir` is the models folder, updates the manifest hashes
 * (keeping every other field and the key order as they are).
 */
export function buildModels(outDir: string = MODELS_DIR): BuildResult {
  mkdirSync(outDir, { recursive: true });
  const dir = realpathSync(outDir);
  const cars = buildCarsMpg();
  const large = buildMlpLarge();
  const outputs: Array<[string, Uint8Array | string]> = [
    ['cars-mpg.onnx', cars.onnx],
    ['mlp-large.onnx', large.onnx],
    ['cars-mpg.eval.json', formatJson(cars.eval)],
  ];
  const files: BuiltFile[] = [];
  for (const [file, data] of outputs) {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    writeAtomic(join(dir, file), bytes);
    files.push({ file, bytes: bytes.length, sha256: sha256Hex(bytes) });
  }

  let manifest: BuildResult['manifest'] = 'not-touched';
  const manifestPath = join(dir, 'manifest.json');
  if (dir === realpathSync(MODELS_DIR) && existsSync(manifestPath)) {
    const before = readFileSync(manifestPath, 'utf8');
    const json = JSON.parse(before) as { models?: Array<Record<string, unknown>> };
    for (const entry of json.models ?? []) {
      const built = files.find((f) => f.file === entry.file);
      if (built) entry.sha256 = built.sha256;
    }
    // Refuse to leave an invalid manifest behind: the worker would not start.
    const parsed = ModelManifest.safeParse(json);
    if (!parsed.success) throw new Error(`manifest.json is invalid after update: ${parsed.error.message}`);
    const text = formatJson(json);
    if (text === before) {
      manifest = 'up-to-date';
    } else {
      writeAtomic(manifestPath, text);
      manifest = 'updated';
    }
  }
  return {
    outDir: dir,
    files,
    holdoutRmse: cars.eval.metrics.holdout.rmse,
    holdoutMae: cars.eval.metrics.holdout.mae,
    trainRmse: cars.eval.metrics.train.rmse,
    manifest,
  };
}

/** Parses `--out DIR` / `--out=DIR`; anything else is an error so typos do not silently write to models/. */
export function parseArgs(argv: readonly string[]): { outDir: string } {
  let outDir = MODELS_DIR;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--out') {
      const value = argv[++i];
      if (value === undefined) throw new Error('--out needs a directory');
      outDir = value;
    } else if (arg.startsWith('--out=')) {
      outDir = arg.slice('--out='.length);
    } else {
      throw new Error(`unknown argument ${arg}; usage: build-models.ts [--out DIR]`);
    }
  }
  return { outDir };
}

function main(): void {
  const { outDir } = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const result = buildModels(outDir);
  const lines = [`built models into ${result.outDir} in ${((performance.now() - started) / 1000).toFixed(1)} s`];
  for (const f of result.files) {
    lines.push(`  ${f.file.padEnd(20)} ${String(f.bytes).padStart(9)} bytes  sha256 ${f.sha256}`);
  }
  lines.push(
    `  cars-mpg: holdout RMSE ${result.holdoutRmse.toFixed(3)} mpg, MAE ${result.holdoutMae.toFixed(3)} mpg ` +
      `(train RMSE ${result.trainRmse.toFixed(3)})`,
  );
  const manifestLine = {
    updated: 'manifest.json sha256 fields updated',
    'up-to-date': 'manifest.json sha256 fields already up to date',
    'not-touched': 'manifest.json not touched (output is not the models folder)',
  } as const;
  lines.push(`  ${manifestLine[result.manifest]}`);
  console.log(lines.join('\n'));
}

const invokedPath = process.argv[1];
if (invokedPath !== undefined && import.meta.url === pathToFileURL(resolve(invokedPath)).href) {
  main();
}
