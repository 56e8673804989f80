import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DirectOrt, startTestRedis, type TestRedis } from '@quern/devkit';
import { inputHash, type JobView, KeySpace, type ModelManifest } from '@quern/shared';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeModel, floatInitializer, floatValueInfo, node } from '../../models/build/onnx-graph';
import { type Stack, startStack } from '../support/stack';
import { writeTestModels } from '../support/test-models';

/**
 * The result cache is keyed by model name and version: after cars-mpg 1.0.0 is replaced by
 * 2.0.0 (another file, other answers) on the same Redis, no request is answered from 1.0.0's
 * entries, on the sync path (looked up by the API) or the async one (looked up by the worker).
 */
const V2_OFFSET = 100;

/** cars-mpg 2.0.0: mpg = cylinders + 100, so its answers cannot be mistaken for 1.0.0's. */
function writeVersion2(dir: string): void {
  const bytes = encodeModel({
    name: 'cars-mpg-2',
    docString: 'cars-mpg 2.0.0 for the result cache test',
    nodes: [node('MatMul', ['features', 'w'], ['scaled']), node('Add', ['scaled', 'b'], ['mpg'])],
    initializers: [floatInitializer('w', [6, 1], [1, 0, 0, 0, 0, 0]), floatInitializer('b', [1], [V2_OFFSET])],
    inputs: [floatValueInfo('features', ['batch', 6])],
    outputs: [floatValueInfo('mpg', ['batch', 1])],
  });
  writeFileSync(join(dir, 'cars-mpg-2.onnx'), bytes);
  const path = join(dir, 'manifest.json');
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as ModelManifest;
  const entry = manifest.models.find((m) => m.name === 'cars-mpg');
  if (!entry) throw new Error('no cars-mpg in the manifest');
  Object.assign(entry, {
    version: '2.0.0',
    file: 'cars-mpg-2.onnx',
    sha256: createHash('sha256').update(bytes).digest('hex'),
  });
  writeFileSync(path, JSON.stringify(manifest, null, 2));
}

let redis: TestRedis;
let v1Dir: string;
let v2Dir: string;
let stack: Stack | undefined;

beforeAll(async () => {
  redis = await startTestRedis();
  v1Dir = writeTestModels([]);
  v2Dir = writeTestModels([]);
  writeVersion2(v2Dir);
});

afterEach(async () => {
  await stack?.close();
  stack = undefined;
});

afterAll(async () => {
  await redis?.close();
  rmSync(v1Dir, { recursive: true, force: true });
  rmSync(v2Dir, { recursive: true, force: true });
});

/** One deployment after another on the same Redis and prefix: the previous one is stopped first. */
async function deploy(modelsDir: string): Promise<Stack> {
  await stack?.close();
  stack = await startStack({ QUERN_MODELS_DIR: modelsDir }, { redis });
  return stack;
}

async function predict(s: Stack, features: number[]) {
  const res = await s.post('/v1/predict', { model: 'cars-mpg', features });
  expect(res.status).toBe(200);
  return (await res.json()) as { prediction: number; cached: boolean; model_version: string };
}

async function asyncJob(s: Stack, features: number[]): Promise<JobView> {
  const res = await s.post('/v1/jobs', { model: 'cars-mpg', features });
  expect(res.status).toBe(202);
  const { id } = (await res.json()) as JobView;
  let view: JobView | undefined;
  await expect
    .poll(
      async () => {
        view = (await (await s.get(`/v1/jobs/${id}`)).json()) as JobView;
        return view.status;
      },
      { timeout: 10_000, interval: 20 },
    )
    .toBe('succeeded');
  return view as JobView;
}

describe('result cache across model versions', () => {
  it('a new version of a model is never answered from the previous version’s cache entries', async () => {
    const syncRow = [4, 121, 95, 2400, 16, 1978];
    const asyncRow = [6, 232, 100, 3200, 15, 1976];
    const manifest = JSON.parse(readFileSync(join(v1Dir, 'manifest.json'), 'utf8')) as ModelManifest;
    const entry = manifest.models.find((m) => m.name === 'cars-mpg');
    if (!entry) throw new Error('no cars-mpg in the manifest');
    const ort = await DirectOrt.load(v1Dir, entry);
    const [v1Sync, v1Async] = (await ort.run([syncRow, asyncRow])).map((r) => r[0] as number);
    await ort.release();

    // 1.0.0 computes both rows; the second sync call is answered from the cache.
    const v1 = await deploy(v1Dir);
    const first = await predict(v1, syncRow);
    expect(first).toMatchObject({ cached: false, model_version: '1.0.0' });
    expect(first.prediction).toBeCloseTo(v1Sync as number, 4);
    expect(await predict(v1, syncRow)).toMatchObject({ cached: true, model_version: '1.0.0' });
    expect((await asyncJob(v1, asyncRow)).output).toEqual({ prediction: expect.closeTo(v1Async as number, 4) });
    const keys = new KeySpace(v1.config.QUERN_REDIS_PREFIX);
    expect(await v1.client.get(keys.cache('cars-mpg', '1.0.0', inputHash(asyncRow)))).not.toBeNull();

    // 2.0.0 replaces it on the same Redis: both rows are computed again, by the new model.
    const v2 = await deploy(v2Dir);
    const upgraded = await predict(v2, syncRow);
    expect(upgraded).toMatchObject({ cached: false, model_version: '2.0.0' });
    expect(upgraded.prediction).toBe((syncRow[0] as number) + V2_OFFSET);
    const job = await asyncJob(v2, asyncRow);
    expect(job).toMatchObject({ model_version: '2.0.0', output: { prediction: (asyncRow[0] as number) + V2_OFFSET } });
    // Each version keeps entries of its own.
    expect(await predict(v2, syncRow)).toMatchObject({
      cached: true,
      model_version: '2.0.0',
      prediction: upgraded.prediction,
    });
    expect(await v2.client.get(keys.cache('cars-mpg', '2.0.0', inputHash(asyncRow)))).not.toBeNull();

    // Rolled back, 1.0.0 still answers from its own entries.
    const back = await deploy(v1Dir);
    const again = await predict(back, syncRow);
    expect(again).toMatchObject({ cached: true, model_version: '1.0.0' });
    expect(again.prediction).toBeCloseTo(v1Sync as number, 4);
  });
});
