import { endianness } from 'node:os';

/** A row of input values: a JSON array, or a row of a `RowMatrix`. */
export type Row = ArrayLike<number>;

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * The input rows of one job as one float32 matrix, row after row: the values the model reads.
 * Jobs carry it packed (`toBase64`), which costs a copy to write and a copy to read, where
 * the same rows as JSON numbers cost a float-to-text conversion per value each way: for a
 * 256-feature model the difference is most of the API's and the worker's time per row.
 */
export class RowMatrix {
  constructor(
    readonly values: Float32Array,
    readonly count: number,
    readonly width: number,
  ) {}

  /** Rows of equal width (the caller has checked them); throws on a ragged one. */
  static fromRows(rows: readonly Row[]): RowMatrix {
    const width = rows[0]?.length ?? 0;
    const values = new Float32Array(rows.length * width);
    rows.forEach((row, i) => {
      if (row.length !== width) throw new Error(`row ${i} has ${row.length} values, expected ${width}`);
      values.set(row, i * width);
    });
    return new RowMatrix(values, rows.length, width);
  }

  /** The rows of several matrices of one width, in order (calls that share one job). */
  static concat(parts: readonly RowMatrix[]): RowMatrix {
    const width = parts[0]?.width ?? 0;
    let count = 0;
    for (const p of parts) {
      if (p.width !== width) throw new Error(`a matrix of width ${p.width} among matrices of width ${width}`);
      count += p.count;
    }
    const values = new Float32Array(count * width);
    let at = 0;
    for (const p of parts) {
      values.set(p.values, at);
      at += p.values.length;
    }
    return new RowMatrix(values, count, width);
  }

  /**
   * `count × width` little-endian float32 values in base64, or a message saying what is wrong
   * with them (not base64, wrong length, a NaN or infinity in a row).
   */
  static fromBase64(data: string, count: number, width: number): RowMatrix | string {
    // Node's decoder skips what is not base64; encoding the bytes again and comparing is strict
    // (and, native on both sides, costs a tenth of a regular expression over the text).
    const bytes = Buffer.from(data, 'base64');
    if (data.length % 4 !== 0 || bytes.toString('base64') !== data) return 'is not base64 (RFC 4648, with padding)';
    const expected = count * width * 4;
    if (bytes.length !== expected) {
      return `holds ${bytes.length} bytes; ${count} rows of ${width} float32 values take ${expected}`;
    }
    const values = new Float32Array(count * width);
    const view = new Uint8Array(values.buffer);
    view.set(bytes);
    if (!LITTLE_ENDIAN) Buffer.from(values.buffer).swap32();
    const matrix = new RowMatrix(values, count, width);
    const bad = matrix.firstNonFiniteRow();
    return bad < 0 ? matrix : `row ${bad} holds a NaN or an infinity`;
  }

  /** Row `i`, a view (no copy). */
  row(i: number): Float32Array {
    return this.values.subarray(i * this.width, (i + 1) * this.width);
  }

  rows(): Float32Array[] {
    return Array.from({ length: this.count }, (_, i) => this.row(i));
  }

  /** Index of the first row holding a NaN or an infinity, or -1. */
  firstNonFiniteRow(): number {
    const { values, width } = this;
    for (let k = 0; k < values.length; k++) {
      if (!Number.isFinite(values[k] as number)) return Math.floor(k / width);
    }
    return -1;
  }

  /** Little-endian float32 bytes in base64, the form jobs carry. */
  toBase64(): string {
    const bytes = Buffer.from(this.values.buffer, this.values.byteOffset, this.values.byteLength);
    return (LITTLE_ENDIAN ? bytes : Buffer.from(bytes).swap32()).toString('base64');
  }
}
