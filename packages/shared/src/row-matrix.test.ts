import { describe, expect, it } from 'vitest';
import { InferenceJobData, inputHash, jobMatrix, jobRowCount } from './jobs';
import { RowMatrix } from './row-matrix';

const base = {
  v: 1 as const,
  model: 'cars-mpg',
  model_version: '1.0.0',
  mode: 'batch' as const,
  owner: 'key_x',
  request_id: 'req_x',
  created_at: 1,
  deadline_at: 2,
  priority: 1,
};

describe('RowMatrix', () => {
  it('packs rows to base64 float32 and back, values as the model reads them', () => {
    const rows = [
      [1, 2.5, -3],
      [0.1, 1e30, 7],
    ];
    const packed = RowMatrix.fromRows(rows).toBase64();
    expect(Buffer.from(packed, 'base64')).toHaveLength(2 * 3 * 4);
    const back = RowMatrix.fromBase64(packed, 2, 3);
    if (typeof back === 'string') throw new Error(back);
    expect(Array.from(back.row(0))).toEqual([1, 2.5, -3]);
    expect(Array.from(back.row(1))).toEqual([Math.fround(0.1), Math.fround(1e30), 7]);
    // Little-endian on the wire: 1.0f is 00 00 80 3f.
    expect(Buffer.from(packed, 'base64').subarray(0, 4)).toEqual(Buffer.from([0, 0, 0x80, 0x3f]));
  });

  it('says what is wrong with data that is not rows × width finite float32 values', () => {
    const six = RowMatrix.fromRows([[1, 2, 3, 4, 5, 6]]).toBase64();
    expect(RowMatrix.fromBase64(six, 2, 3)).toBeInstanceOf(RowMatrix);
    expect(RowMatrix.fromBase64(six, 2, 4)).toBe('holds 24 bytes; 2 rows of 4 float32 values take 32');
    expect(RowMatrix.fromBase64(`${six.slice(0, -4)}a$b=`, 2, 3)).toMatch(/not base64/);
    expect(RowMatrix.fromBase64(six.slice(1), 2, 3)).toMatch(/not base64/);
    const nan = RowMatrix.fromRows([
      [1, 2],
      [3, Number.POSITIVE_INFINITY],
    ]).toBase64();
    expect(RowMatrix.fromBase64(nan, 2, 2)).toBe('row 1 holds a NaN or an infinity');
  });

  it('refuses ragged rows', () => {
    expect(() => RowMatrix.fromRows([[1, 2], [3]])).toThrow(/row 1 has 1 values, expected 2/);
  });

  it('hashes a packed row like the same row of JSON numbers (one cache for both forms)', () => {
    const row = [4, 97, 88, 2130, 14.5, 1971.0000000001];
    const matrix = RowMatrix.fromRows([[0, 0, 0, 0, 0, 0], row]);
    expect(inputHash(matrix.row(1))).toBe(inputHash(row));
    expect(inputHash(matrix.row(0))).not.toBe(inputHash(row));
  });
});

describe('job input', () => {
  it('reads packed input and the JSON rows of older jobs alike', () => {
    const rows = [
      [1, 2, 3],
      [4, 5, 6],
    ];
    const packed = InferenceJobData.parse({
      ...base,
      input: { count: 2, width: 3, f32: RowMatrix.fromRows(rows).toBase64() },
    });
    const legacy = InferenceJobData.parse({ ...base, rows });
    for (const data of [packed, legacy]) {
      expect(jobRowCount(data)).toBe(2);
      const matrix = jobMatrix(data);
      if (typeof matrix === 'string') throw new Error(matrix);
      expect(Array.from(matrix.values)).toEqual(rows.flat());
    }
    expect(jobMatrix(InferenceJobData.parse({ ...base, rows: [[1, 2, 3], [4]] }))).toBe(
      'row 1 has 1 features, row 0 has 3',
    );
  });

  it('needs exactly one of input and rows', () => {
    const input = { count: 1, width: 1, f32: RowMatrix.fromRows([[1]]).toBase64() };
    expect(InferenceJobData.safeParse({ ...base }).success).toBe(false);
    expect(InferenceJobData.safeParse({ ...base, input, rows: [[1]] }).success).toBe(false);
    expect(InferenceJobData.safeParse({ ...base, input }).success).toBe(true);
  });
});
