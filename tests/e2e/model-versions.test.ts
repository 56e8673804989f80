import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DirectOrt, maxAbsDiff } from '@quern/devkit';
import { type ModelEntry, type ModelManifest, pickVersion, readRouting, writeRouting } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCarsMpg, CARS_MPG_CONFIG } from '../../models/build/cars-mpg';
import { type Stack, startStack } from '../support/stack';
import { writeTestModels } from '../support/test-models';

/**
 * Model versions side by side: cars-mpg 2.0.0 is a re-seeded build (another split and other
 * initial weights, so other answers) served beside 1.0.0 from one queue, by real workers and
 * ONNX Runtime. Pinned requests get exactly their version; an operator loads, splits traffic,
 * promotes and unloads without a restart and without a failed request; bad versions are refused
 * with the reason while the running ones serve on.
 */
const CAR = [4, 140, 90, 2264, 15.5, 1976];
const CARS = [CAR, [8, 350, 165, 4200, 11, 1970], [4, 98, 70, 2100, 16, 1980]];

let dir: string;
let stack: Stack;
let v1: DirectOrt;
let v2: DirectOrt;
let manifestPath: string;

function readManifest(): ModelManifest {
  return JSON.parse(readFileSync(manifestPath, 'utf8')) as ModelManifest;
}

/** Adds versions to the folder's manifest (as an operator would, with the service running). */
function addVersions(...entries: ModelEntry[]): void {
  const manifest = readManifest();
  manifest.versions = [...(manifest.versions ?? []), ...entries];
  writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

beforeAll(async () => {
  dir = writeTestModels([]);
  manifestPath = join(dir, 'manifest.json');
  const rebuilt = buildCarsMpg({ ...CARS_MPG_CONFIG, seed: 2024 });
  writeFileSync(join(dir, 'cars-mpg-2.onnx'), rebuilt.onnx);
  const base = readManifest().models.find((m) => m.name === 'cars-mpg') as ModelEntry;
  const v2Entry = { ...base, version: '2.0.0', file: 'cars-mpg-2.onnx', sha256: sha256(join(dir, 'cars-mpg-2.onnx')) };
  addVersions(v2Entry);
  v1 = await DirectOrt.load(dir, base);
  v2 = await DirectOrt.load(dir, v2Entry);
  stack = await startStack({
    QUERN_MODELS_DIR: dir,
    QUERN_WORKER_THREADS: '2',
    // cars-mpg is tiny; one more copy of mlp-large's 5 MB (× 3 sessions) does not fit.
    QUERN_WORKER_MODEL_MEMORY_MB: '20',
    // Cache off: every answer here is computed by the version it names.
    QUERN_CACHE_TTL_SECONDS: '0',
  });
}, 60_000);

afterAll(async () => {
  await stack?.close();
  await v1?.release();
  await v2?.release();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function predict(model: string, features: number[] = CAR) {
  const res = await stack.post('/v1/predict', { model, features });
  return { status: res.status, body: (await res.json()) as { prediction: number; model_version: string } };
}

async function admin(path: string, body: unknown = {}) {
  const res = await stack.post(path, body);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('model versions', () => {
  it('serves every manifest version at start; a pinned request gets exactly its version', async () => {
    const [want1, want2] = [await v1.run([CAR]), await v2.run([CAR])];
    // The re-seeded build answers differently: a mix-up would show.
    expect(maxAbsDiff(want1, want2)).toBeGreaterThan(0.01);

    const list = await stack.get('/v1/models/cars-mpg/versions');
    expect(list.status).toBe(200);
    const { data } = (await list.json()) as {
      data: { version: string; state: string; default: boolean; weight: number }[];
    };
    expect(data).toEqual([
      expect.objectContaining({ version: '1.0.0', state: 'live', default: true, weight: 100 }),
      expect.objectContaining({ version: '2.0.0', state: 'live', default: false, weight: 0 }),
    ]);

    for (let i = 0; i < 3; i++) {
      const [p1, p2, unpinned] = await Promise.all([
        predict('cars-mpg@1.0.0'),
        predict('cars-mpg@2.0.0'),
        predict('cars-mpg'),
      ]);
      expect(p1.body.model_version).toBe('1.0.0');
      expect(p1.body.prediction).toBeCloseTo(want1[0]?.[0] as number, 4);
      expect(p2.body.model_version).toBe('2.0.0');
      expect(p2.body.prediction).toBeCloseTo(want2[0]?.[0] as number, 4);
      expect(unpinned.body.model_version).toBe('1.0.0');
    }
    // A batch of rows pinned to 2.0.0, through the async path: the job records and runs 2.0.0.
    const job = await stack.post('/v1/jobs', { model: 'cars-mpg@2.0.0', features: CARS[1] });
    expect(job.status).toBe(202);
    const { id } = (await job.json()) as { id: string };
    let view: { status: string; model_version?: string; result?: { prediction: number } } = { status: 'queued' };
    for (const until = Date.now() + 10_000; view.status !== 'succeeded' && Date.now() < until; ) {
      view = (await (await stack.get(`/v1/jobs/${id}`)).json()) as typeof view;
    }
    expect(view.status).toBe('succeeded');
    expect(JSON.stringify(view)).toContain('2.0.0');

    const missing = await predict('cars-mpg@9.9.9');
    expect(missing.status).toBe(404);

    // The Open Inference Protocol's versioned path pins the same way.
    const oip = (version: string) =>
      stack.post(`/v2/models/cars-mpg/versions/${version}/infer`, {
        inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: CAR }],
      });
    const oip2 = await oip('2.0.0');
    expect(oip2.status).toBe(200);
    const body = (await oip2.json()) as { model_version: string; outputs: { data: number[] }[] };
    expect(body.model_version).toBe('2.0.0');
    expect(body.outputs[0]?.data[0]).toBeCloseTo(want2[0]?.[0] as number, 4);
    expect((await oip('9.9.9')).status).toBe(404);
  });

  it('refuses a bad hash, a graph unlike its manifest entry and a load past the memory budget; the others serve on', async () => {
    const base = readManifest().models.find((m) => m.name === 'cars-mpg') as ModelEntry;
    const large = readManifest().models.find((m) => m.name === 'mlp-large') as ModelEntry;
    copyFileSync(join(dir, 'mlp-large.onnx'), join(dir, 'mlp-large-2.onnx'));
    addVersions(
      { ...base, version: '3.0.0-badhash', file: 'cars-mpg-2.onnx', sha256: '0'.repeat(64) },
      {
        ...base,
        version: '4.0.0-badspec',
        file: 'cars-mpg-2.onnx',
        output: { name: 'price', shape: [1] },
        sha256: sha256(join(dir, 'cars-mpg-2.onnx')),
      },
      { ...large, version: '2.0.0', file: 'mlp-large-2.onnx' },
    );
    const hash = await admin('/v1/admin/models/cars-mpg/versions/3.0.0-badhash/load');
    expect(hash.status).toBe(422);
    expect(String(hash.body.detail)).toContain('SHA-256');
    const spec = await admin('/v1/admin/models/cars-mpg/versions/4.0.0-badspec/load');
    expect(spec.status).toBe(422);
    expect(String(spec.body.detail)).toContain('the manifest names output price');
    const budget = await admin('/v1/admin/models/mlp-large/versions/2.0.0/load');
    expect(budget.status).toBe(422);
    expect(String(budget.body.detail)).toContain('QUERN_WORKER_MODEL_MEMORY_MB');

    const list = (await (await stack.get('/v1/models/cars-mpg/versions')).json()) as {
      data: { version: string; state: string }[];
    };
    expect(list.data.map((v) => [v.version, v.state])).toEqual([
      ['1.0.0', 'live'],
      ['2.0.0', 'live'],
      ['3.0.0-badhash', 'available'],
      ['4.0.0-badspec', 'available'],
    ]);
    expect((await predict('cars-mpg@3.0.0-badhash')).status).toBe(404);
    expect((await predict('cars-mpg@2.0.0')).body.model_version).toBe('2.0.0');
    expect((await predict('cars-mpg')).body.model_version).toBe('1.0.0');
    const forbidden = await stack.post('/v1/admin/models/cars-mpg/versions/2.0.0/load', {}, { 'x-api-key': 'qk_nope' });
    expect(forbidden.status).toBe(401);
  });

  it('loads 3.0.0 without a restart, shifts 10% then 100% of traffic to it, promotes it and unloads 1.0.0 under steady load, failing nothing', async () => {
    // A third build, added to the manifest while the service runs.
    const base = readManifest().models.find((m) => m.name === 'cars-mpg') as ModelEntry;
    writeFileSync(join(dir, 'cars-mpg-3.onnx'), buildCarsMpg({ ...CARS_MPG_CONFIG, seed: 7 }).onnx);
    const v3Entry = {
      ...base,
      version: '3.0.0',
      file: 'cars-mpg-3.onnx',
      sha256: sha256(join(dir, 'cars-mpg-3.onnx')),
    };
    addVersions(v3Entry);
    const v3 = await DirectOrt.load(dir, v3Entry);
    const want3 = await v3.run(CARS);
    await v3.release();
    const outcomes: { status: number; version: string }[] = [];
    let running = true;
    const loop = async (seed: number) => {
      for (let i = 0; running; i++) {
        const { status, body } = await predict('cars-mpg', CARS[(seed + i) % CARS.length]);
        outcomes.push({ status, version: body.model_version });
      }
    };
    const loops = [0, 1, 2].map(loop);
    const waitFor = async (check: () => boolean) => {
      for (const until = Date.now() + 15_000; !check(); ) {
        if (Date.now() > until) throw new Error('condition not met in 15 s');
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const seen = () => outcomes.length;
    try {
      await waitFor(() => seen() > 20);
      const loaded = await admin('/v1/admin/models/cars-mpg/versions/3.0.0/load', { weight: 10 });
      expect(loaded.status).toBe(200);
      expect(loaded.body).toMatchObject({ workers_ready: 1, version: { state: 'live', weight: 10 } });
      // Pinned, it answers with its own weights from the first request on.
      for (const [i, row] of CARS.entries()) {
        const pinned = await predict('cars-mpg@3.0.0', row);
        expect(pinned.body.model_version).toBe('3.0.0');
        expect(pinned.body.prediction).toBeCloseTo(want3[i]?.[0] as number, 4);
      }
      let mark = seen();
      await waitFor(() => seen() > mark + 20);
      expect((await admin('/v1/admin/models/cars-mpg/routing', { weights: { '3.0.0': 100 } })).status).toBe(200);
      mark = seen();
      await waitFor(() => seen() > mark + 20);
      // Every call from here on was routed after the shift: all 2.0.0.
      const shifted = seen();
      await waitFor(() => seen() > shifted + 20);
      expect(outcomes.slice(shifted + 3).every((o) => o.version === '3.0.0')).toBe(true);
      const promoted = await admin('/v1/admin/models/cars-mpg/routing', { default_version: '3.0.0' });
      expect(promoted.status).toBe(200);
      const unloaded = await admin('/v1/admin/models/cars-mpg/versions/1.0.0/unload');
      expect(unloaded.status).toBe(200);
      expect(unloaded.body.state).toBe('draining');
      mark = seen();
      await waitFor(() => seen() > mark + 20);
    } finally {
      running = false;
      await Promise.all(loops);
    }
    expect(outcomes.filter((o) => o.status !== 200)).toEqual([]);
    expect(outcomes.at(-1)?.version).toBe('3.0.0');
    // 1.0.0 takes no new jobs: pinning it is refused, and it cannot be the target of a weight.
    expect((await predict('cars-mpg@1.0.0')).status).toBe(404);
    expect((await admin('/v1/admin/models/cars-mpg/routing', { weights: { '1.0.0': 5 } })).status).toBe(422);
    // The default version cannot be unloaded.
    expect((await admin('/v1/admin/models/cars-mpg/versions/3.0.0/unload')).status).toBe(422);
    // Jobs may live a day here (QUERN_JOB_TIMEOUT_MAX_MS), but once the queue holds no job for
    // 1.0.0 the worker releases its sessions in every thread, without waiting that long.
    expect(stack.worker.pool.modelNames()).toContain('cars-mpg@1.0.0');
    await expect
      .poll(() => stack.worker.models.get('cars-mpg', '1.0.0') === undefined, { timeout: 15_000, interval: 100 })
      .toBe(true);
    expect(stack.worker.pool.modelNames()).not.toContain('cars-mpg@1.0.0');
    const after = (await (await stack.get('/v1/models/cars-mpg/versions/1.0.0')).json()) as { state: string };
    expect(after.state).toBe('available');
  });
});

describe('routing writes', () => {
  it('refuses a change made from a stale read (two operators at once), so neither undoes the other', async () => {
    const read = await readRouting(stack.client, stack.keys, readManifest(), 'mlp-large');
    if (!read) throw new Error('no routing for mlp-large');
    const first = await writeRouting(stack.client, stack.keys, 'mlp-large', read);
    expect(first?.rev).toBe(read.rev + 1);
    expect(await writeRouting(stack.client, stack.keys, 'mlp-large', read)).toBeUndefined();
    expect((await readRouting(stack.client, stack.keys, readManifest(), 'mlp-large'))?.rev).toBe(read.rev + 1);
  });
});

describe('canary routing', () => {
  it('gives a version about its weight of callers, and one caller always the same version', () => {
    const routing = {
      rev: 1,
      default_version: '1.0.0',
      versions: { '1.0.0': { state: 'live' as const, weight: 0 }, '2.0.0': { state: 'live' as const, weight: 10 } },
    };
    const keys = Array.from({ length: 4000 }, (_, i) => `key_${i}`);
    const picks = keys.map((k) => pickVersion(routing, 'cars-mpg', k));
    const share = picks.filter((v) => v === '2.0.0').length / keys.length;
    expect(share).toBeGreaterThan(0.08);
    expect(share).toBeLessThan(0.12);
    expect(keys.every((k, i) => pickVersion(routing, 'cars-mpg', k) === picks[i])).toBe(true);
    // Raising the weight only moves callers towards the canary: nobody on 2.0.0 goes back.
    const wider = { ...routing, versions: { ...routing.versions, '2.0.0': { state: 'live' as const, weight: 50 } } };
    expect(keys.every((k, i) => picks[i] !== '2.0.0' || pickVersion(wider, 'cars-mpg', k) === '2.0.0')).toBe(true);
  });
});

describe('shadow runs', () => {
  it('runs a sample of live rows on a shadow version after the answer and reports the difference an offline comparison finds', async () => {
    // After the test above, 3.0.0 is the default; 2.0.0 (still live) becomes its shadow for every job.
    const shadow = await admin('/v1/admin/models/cars-mpg/versions/2.0.0/load', { mode: 'shadow', sample: 1 });
    expect(shadow.status).toBe(200);
    expect(shadow.body).toMatchObject({ version: { state: 'shadow', sample: 1 } });
    const rows = Array.from({ length: 12 }, (_, i) => [
      4 + (i % 5),
      100 + 20 * i,
      70 + 5 * i,
      2000 + 150 * i,
      12 + (i % 6),
      1970 + (i % 13),
    ]);
    for (const row of rows) {
      const answer = await predict('cars-mpg', row);
      expect(answer.body.model_version).toBe('3.0.0');
    }
    type View = { state: string; shadow?: { rows: number; max_abs_diff: number; mean_abs_diff: number } };
    let view: View = { state: '' };
    for (const until = Date.now() + 10_000; (view.shadow?.rows ?? 0) < rows.length && Date.now() < until; ) {
      view = (await (await stack.get('/v1/models/cars-mpg/versions/2.0.0')).json()) as View;
    }
    expect(view.state).toBe('shadow');
    expect(view.shadow?.rows).toBe(rows.length);
    // The same comparison offline: both versions run directly on the same rows.
    const entry3 = readManifest().versions?.find((v) => v.version === '3.0.0') as ModelEntry;
    const v3 = await DirectOrt.load(dir, entry3);
    const [live, candidate] = [await v3.run(rows), await v2.run(rows)];
    await v3.release();
    const diffs = rows.map((_, i) => Math.abs((live[i]?.[0] as number) - (candidate[i]?.[0] as number)));
    const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
    expect(mean).toBeGreaterThan(0.01);
    expect(view.shadow?.max_abs_diff).toBeCloseTo(Math.max(...diffs), 3);
    expect(view.shadow?.mean_abs_diff).toBeCloseTo(mean, 3);
    // Shadow versions take no traffic of their own.
    expect((await predict('cars-mpg@2.0.0')).status).toBe(404);
    // The worker's metrics say the same, per version.
    const metrics = await stack.worker.metrics.registry.metrics();
    expect(metrics).toMatch(/quern_shadow_rows_total\{[^}]*version="2\.0\.0"[^}]*outcome="compared"[^}]*\} 12/);
    expect(metrics).toMatch(/quern_model_version_jobs_total\{[^}]*version="3\.0\.0"[^}]*outcome="succeeded"/);
  });
});
