import { join } from 'node:path';
import { DirectOrt, maxAbsDiff, REPO_ROOT, randomRows } from '@quern/devkit';
import { loadManifest, type ModelEntry, RowMatrix } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferencePool, MAX_INLINE_IN_FLIGHT } from './inference-pool';
import { resolveServedModels, type ServedModel } from './models';

const MODELS_DIR = join(REPO_ROOT, 'models');
let served: ServedModel[];
let cars: ModelEntry;
let direct: DirectOrt;

beforeAll(async () => {
  const manifest = loadManifest(MODELS_DIR);
  served = await resolveServedModels(manifest, MODELS_DIR, ['cars-mpg']);
  cars = (served[0] as ServedModel).entry;
  direct = await DirectOrt.load(MODELS_DIR, cars);
});

afterAll(async () => {
  await direct?.release();
});

function carRows(n: number, seed: number): number[][] {
  return randomRows(n, 6, seed).map((r) => r.map((v, i) => ([4, 140, 90, 2264, 15.5, 75][i] as number) + v));
}

/** The pool's key of cars-mpg's default version (`cars-mpg@1.0.0`). */
function carsRef(): string {
  return (served[0] as ServedModel).pool.name;
}

async function run(pool: InferencePool, rows: number[][]): Promise<number[][]> {
  const matrix = RowMatrix.fromRows(rows);
  const { output } = await pool.run(carsRef(), rows.length, matrix.values);
  return rows.map((_, i) => [output[i] as number]);
}

describe('inference pool: small batches on the calling thread', () => {
  it('runs batches up to the inline size on the calling thread, bigger ones on a thread, with the same results', async () => {
    const pool = new InferencePool({
      models: served.map((m) => m.pool),
      threads: 1,
      // A generous bound: this checks where batches run, not how fast this machine is.
      inline: { maxRows: 4, maxMs: 1_000 },
    });
    await pool.start();
    try {
      expect(pool.inlineModels()).toEqual([carsRef()]);
      const small = carRows(3, 1);
      const before = pool.inlineBatchCount;
      expect(maxAbsDiff(await run(pool, small), await direct.run(small))).toBeLessThan(1e-4);
      expect(pool.inlineBatchCount).toBe(before + 1);
      const big = carRows(5, 2);
      expect(maxAbsDiff(await run(pool, big), await direct.run(big))).toBeLessThan(1e-4);
      expect(pool.inlineBatchCount).toBe(before + 1);
    } finally {
      await pool.close();
    }
  });

  it('queues at most a few small batches on the event loop at once; the rest of a burst go to idle threads', async () => {
    const pool = new InferencePool({
      models: served.map((m) => m.pool),
      threads: 2,
      inline: { maxRows: 4, maxMs: 1_000 },
    });
    await pool.start();
    try {
      const before = pool.inlineBatchCount;
      // Four small batches started in one turn: two inline, two on the two idle threads.
      const burst = [1, 2, 3, 4].map((seed) => carRows(2, seed));
      const results = await Promise.all(burst.map((rows) => run(pool, rows)));
      expect(pool.inlineBatchCount - before).toBe(MAX_INLINE_IN_FLIGHT);
      for (const [i, rows] of burst.entries()) {
        expect(maxAbsDiff(results[i] as number[][], await direct.run(rows))).toBeLessThan(1e-4);
      }
      // With every thread busy, a small batch still runs inline rather than failing.
      const more = [5, 6, 7, 8, 9].map((seed) => carRows(2, seed));
      await Promise.all(more.map((rows) => run(pool, rows)));
      expect(pool.inlineBatchCount - before).toBe(MAX_INLINE_IN_FLIGHT + 3);
    } finally {
      await pool.close();
    }
  });

  it('keeps every batch on the threads when the model is slower than the bound, or inline is off', async () => {
    for (const inline of [
      { maxRows: 4, maxMs: 0 },
      { maxRows: 0, maxMs: 1_000 },
    ]) {
      const pool = new InferencePool({ models: served.map((m) => m.pool), threads: 1, inline });
      await pool.start();
      try {
        expect(pool.inlineModels()).toEqual([]);
        const rows = carRows(2, 3);
        expect(maxAbsDiff(await run(pool, rows), await direct.run(rows))).toBeLessThan(1e-4);
        expect(pool.inlineBatchCount).toBe(0);
      } finally {
        await pool.close();
      }
    }
  });
});

describe('inference pool: versions loaded and unloaded at run time', () => {
  it('loads a second version beside the first, warmed in every thread, then unloads it; the first keeps serving', async () => {
    const pool = new InferencePool({ models: served.map((m) => m.pool), threads: 2, inline: { maxRows: 0, maxMs: 0 } });
    await pool.start();
    try {
      const v2 = { ...(served[0] as ServedModel).pool, name: 'cars-mpg@2.0.0' };
      await pool.load(v2);
      expect(pool.modelNames()).toEqual([carsRef(), 'cars-mpg@2.0.0']);
      const rows = carRows(3, 4);
      // Both threads hold it: two batches at once, one on each.
      const [a, b] = await Promise.all(
        [0, 1].map(() => pool.run('cars-mpg@2.0.0', rows.length, RowMatrix.fromRows(rows).values)),
      );
      const expected = await direct.run(rows);
      for (const out of [a, b]) {
        expect(
          maxAbsDiff(
            rows.map((_, i) => [out?.output[i] as number]),
            expected,
          ),
        ).toBeLessThan(1e-4);
      }
      await pool.unload('cars-mpg@2.0.0');
      await expect(pool.run('cars-mpg@2.0.0', 1, new Float32Array(6))).rejects.toThrow('not loaded');
      expect(maxAbsDiff(await run(pool, rows), expected)).toBeLessThan(1e-4);
    } finally {
      await pool.close();
    }
  });

  it('fails a load whose thread dies, and the replacement thread serves the models it had', async () => {
    const pool = new InferencePool({ models: served.map((m) => m.pool), threads: 1, inline: { maxRows: 0, maxMs: 0 } });
    await pool.start();
    try {
      const loading = pool.load({ ...(served[0] as ServedModel).pool, name: 'cars-mpg@2.0.0' });
      // The load message is on its way: the thread dies before it can answer.
      const [slot] = (pool as unknown as { slots: { thread: { terminate(): Promise<number> } }[] }).slots;
      await slot?.thread.terminate();
      await expect(loading).rejects.toThrow('while loading a model');
      expect(pool.modelNames()).toEqual([carsRef()]);
      for (const until = Date.now() + 10_000; pool.idleCount() === 0; ) {
        if (Date.now() > until) throw new Error('no replacement thread');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const rows = carRows(2, 6);
      expect(maxAbsDiff(await run(pool, rows), await direct.run(rows))).toBeLessThan(1e-4);
    } finally {
      await pool.close();
    }
  });

  it('refuses a graph whose input or output differs from its manifest entry, and keeps serving the others', async () => {
    const pool = new InferencePool({ models: served.map((m) => m.pool), threads: 1, inline: { maxRows: 0, maxMs: 0 } });
    await pool.start();
    try {
      const base = (served[0] as ServedModel).pool;
      await expect(pool.load({ ...base, name: 'cars-mpg@9', outputName: 'price' })).rejects.toThrow(
        'the manifest names output price',
      );
      await expect(pool.load({ ...base, name: 'cars-mpg@9', features: 7 })).rejects.toThrow('does not take [1, 7]');
      expect(pool.modelNames()).toEqual([carsRef()]);
      const rows = carRows(2, 5);
      expect(maxAbsDiff(await run(pool, rows), await direct.run(rows))).toBeLessThan(1e-4);
    } finally {
      await pool.close();
    }
  });
});
