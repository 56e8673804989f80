import { join } from 'node:path';
import { type ModelEntry, outputSize } from '@quern/shared';
import ort from 'onnxruntime-node';

/**
 * ONNX Runtime called directly on the main thread, with no queue and no batcher: the reference
 * outputs tests compare Quern's answers against.
 */
export class DirectOrt {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly model: ModelEntry,
  ) {}

  static async load(modelsDir: string, model: ModelEntry): Promise<DirectOrt> {
    const session = await ort.InferenceSession.create(join(modelsDir, model.file), { intraOpNumThreads: 1 });
    return new DirectOrt(session, model);
  }

  /** One output row per input row, as plain numbers. */
  async run(rows: readonly (readonly number[])[]): Promise<number[][]> {
    const width = this.model.input.features;
    const input = new Float32Array(rows.length * width);
    rows.forEach((row, i) => {
      input.set(row, i * width);
    });
    const result = await this.session.run({
      [this.model.input.name]: new ort.Tensor('float32', input, [rows.length, width]),
    });
    const data = result[this.model.output.name]?.data as Float32Array;
    const size = outputSize(this.model);
    return rows.map((_, i) => Array.from(data.subarray(i * size, (i + 1) * size)));
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Deterministic pseudo-random rows (mulberry32), so a failing test can be rerun exactly. */
export function randomRows(count: number, width: number, seed: number, scale = 1): number[][] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: count }, () => Array.from({ length: width }, () => (next() * 2 - 1) * scale));
}

/** Largest absolute difference between two equally shaped lists of rows. */
export function maxAbsDiff(a: readonly (readonly number[])[], b: readonly (readonly number[])[]): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let max = 0;
  a.forEach((row, i) => {
    const other = b[i];
    if (!other || other.length !== row.length) {
      max = Number.POSITIVE_INFINITY;
      return;
    }
    row.forEach((v, j) => {
      max = Math.max(max, Math.abs(v - (other[j] as number)));
    });
  });
  return max;
}
