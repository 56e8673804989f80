/**
 * End-to-end checks of the committed models: manifest integrity, agreement between ONNX Runtime and an independent
 * float64 interpreter, byte-for-byte reproducibility of the build, and the cars-mpg quality claims in the eval file.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifest } from '@quern/shared';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CarsMpgEval, loadCars, splitCars } from '../build/cars-mpg';
import { createPrng } from '../build/prng';
import { sha256Hex } from '../build/sha256';
import { loadRefModel, type RefModel, runRefModel } from './reference-interpreter';

const MODELS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BUILD_SCRIPT = join(MODELS_DIR, 'build', 'build-models.ts');
const BUILT_FILES = ['cars-mpg.onnx', 'mlp-large.onnx', 'cars-mpg.eval.json'];

/** Runs ONNX Runtime on a `[batch, features]` float32 batch and returns the flat float32 output and its dims. */
async function runOrt(session: InferenceSession, input: Float32Array, features: number) {
  const batch = input.length / features;
  const inputName = session.inputNames[0] ?? '';
  const outputName = session.outputNames[0] ?? '';
  const result = await session.run({ [inputName]: new Tensor('float32', input, [batch, features]) });
  const out = result[outputName];
  if (!out) throw new Error(`no output ${outputName}`);
  return { data: out.data as Float32Array, dims: [...out.dims] };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return m;
}

function spread(values: ArrayLike<number>): number {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i] ?? 0);
    hi = Math.max(hi, values[i] ?? 0);
  }
  return hi - lo;
}

const cars = loadCars();
const split = splitCars(cars);
const evalReport = JSON.parse(readFileSync(join(MODELS_DIR, 'cars-mpg.eval.json'), 'utf8')) as CarsMpgEval;

describe('manifest', () => {
  it('validates and every model file matches its sha256', () => {
    const manifest = loadManifest(MODELS_DIR);
    expect(manifest.default_model).toBe('cars-mpg');
    expect(manifest.models.map((m) => m.name)).toEqual(['cars-mpg', 'mlp-large']);
    for (const entry of manifest.models) {
      const bytes = readFileSync(join(MODELS_DIR, entry.file));
      expect(sha256Hex(bytes), entry.file).toBe(entry.sha256);
    }
  });
});

describe.each([
  { name: 'cars-mpg', features: 6, outputs: 1, inputName: 'features', outputName: 'mpg' },
  { name: 'mlp-large', features: 256, outputs: 8, inputName: 'features', outputName: 'scores' },
])('$name: ONNX Runtime vs independent interpreter', ({ name, features, outputs, inputName, outputName }) => {
  const path = join(MODELS_DIR, `${name}.onnx`);
  let session: InferenceSession;
  let ref: RefModel;

  beforeAll(async () => {
    session = await InferenceSession.create(path, { intraOpNumThreads: 1 });
    ref = loadRefModel(path);
  });
  afterAll(async () => {
    await session.release();
  });

  /** Realistic raw rows for cars-mpg (real cars from the dataset), uniform [-1, 1] for mlp-large. */
  function inputs(batch: number, seed: number): Float32Array {
    const x = new Float32Array(batch * features);
    const prng = createPrng(seed);
    for (let n = 0; n < batch; n++) {
      if (name === 'cars-mpg') {
        const row = cars[prng.nextInt(cars.length)];
        x.set(row?.features ?? [], n * features);
      } else {
        for (let k = 0; k < features; k++) x[n * features + k] = prng.uniform(1);
      }
    }
    return x;
  }

  it('declares the manifest interface: float32 [batch, F] in, [batch, ...shape] out', () => {
    expect(session.inputNames).toEqual([inputName]);
    expect(session.outputNames).toEqual([outputName]);
    expect(ref.inputDims).toEqual(['batch', features]);
    expect(ref.outputDims).toEqual(['batch', outputs]);
    // int64 fields decode as number or Long; compare their decimal strings.
    expect(String(ref.proto.irVersion)).toBe('8');
    expect(ref.proto.opsetImport.map((o) => `${o.domain}:${String(o.version)}`)).toEqual([':17']);
  });

  it.each([
    [1, 11],
    [1, 12],
    [1, 13],
    [7, 14],
    [7, 15],
  ])('batch %i (seed %i) agrees within 1e-4', async (batch, seed) => {
    const x = inputs(batch, seed);
    const ort = await runOrt(session, x, features);
    expect(ort.dims).toEqual([batch, outputs]);
    const expected = runRefModel(ref, { dims: [batch, features], data: Float64Array.from(x) });
    expect(expected.dims).toEqual([batch, outputs]);
    expect(maxAbsDiff(ort.data, expected.data)).toBeLessThanOrEqual(1e-4);
    for (const v of ort.data) expect(Number.isFinite(v)).toBe(true);
    // Guard against a vacuous pass (e.g. both sides all zero or constant).
    if (ort.data.length > 1) expect(spread(ort.data)).toBeGreaterThan(1e-2);
    expect(Math.max(...Array.from(ort.data, Math.abs))).toBeGreaterThan(1e-2);
  });

  if (name === 'mlp-large') {
    it('produces O(1) outputs for inputs uniform in [-1, 1]', async () => {
      const ort = await runOrt(session, inputs(64, 99), features);
      const maxAbs = Math.max(...Array.from(ort.data, Math.abs));
      expect(maxAbs).toBeGreaterThan(0.1);
      expect(maxAbs).toBeLessThan(10);
    });
  }
});

describe('cars-mpg quality', () => {
  let session: InferenceSession;
  beforeAll(async () => {
    session = await InferenceSession.create(join(MODELS_DIR, 'cars-mpg.onnx'), { intraOpNumThreads: 1 });
  });
  afterAll(async () => {
    await session.release();
  });

  it('uses the documented split of the 392 complete rows', () => {
    expect(cars).toHaveLength(392);
    expect(split.train).toHaveLength(evalReport.split.train_rows);
    expect(split.holdout).toHaveLength(evalReport.split.holdout_rows);
    expect(split.train.length + split.holdout.length).toBe(392);
  });

  it('holdout RMSE through ONNX Runtime matches the eval file and is below 3.5 mpg', async () => {
    const x = new Float32Array(split.holdout.length * 6);
    split.holdout.forEach((r, n) => {
      x.set(r.features, n * 6);
    });
    const { data } = await runOrt(session, x, 6);
    let se = 0;
    split.holdout.forEach((r, n) => {
      se += ((data[n] ?? 0) - r.mpg) ** 2;
    });
    const rmse = Math.sqrt(se / split.holdout.length);
    expect(Math.abs(rmse - evalReport.metrics.holdout.rmse)).toBeLessThanOrEqual(1e-3);
    expect(rmse).toBeLessThan(3.5);
    // The MLP should beat the linear baseline reported alongside it.
    expect(rmse).toBeLessThan(evalReport.baselines.holdout_linear_least_squares.rmse);
  });

  it('predicts better mileage for a light 1980 four-cylinder than for a heavy 1970 V8', async () => {
    const light = [4, 98, 70, 2100, 16, 1980];
    const heavy = [8, 350, 165, 4200, 11, 1970];
    const { data } = await runOrt(session, Float32Array.from([...light, ...heavy]), 6);
    const [lightMpg = 0, heavyMpg = 0] = data;
    expect(lightMpg).toBeGreaterThan(heavyMpg + 10);
    expect(lightMpg).toBeGreaterThan(25);
    expect(lightMpg).toBeLessThan(50);
    expect(heavyMpg).toBeGreaterThan(5);
    expect(heavyMpg).toBeLessThan(20);
  });
});

describe('reproducible build', () => {
  it('rebuilding into a temp dir gives byte-identical files and leaves the manifest alone', () => {
    const out = mkdtempSync(join(tmpdir(), 'quern-models-'));
    const manifestBefore = readFileSync(join(MODELS_DIR, 'manifest.json'));
    try {
      const tsxCli = createRequire(import.meta.url).resolve('tsx/cli');
      const stdout = execFileSync(process.execPath, [tsxCli, BUILD_SCRIPT, '--out', out], { encoding: 'utf8' });
      expect(stdout).toContain('manifest.json not touched');
      for (const file of BUILT_FILES) {
        const rebuilt = readFileSync(join(out, file));
        const committed = readFileSync(join(MODELS_DIR, file));
        expect(sha256Hex(rebuilt), file).toBe(sha256Hex(committed));
        expect(rebuilt.equals(committed), file).toBe(true);
      }
      expect(readFileSync(join(MODELS_DIR, 'manifest.json')).equals(manifestBefore)).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
