/**
 * A deliberately tiny, independent ONNX evaluator used only by the tests.
 *
 * It parses a .onnx file with onnx-proto (not with the build helpers), reads the float32 initializers and walks the
 * nodes in float64, supporting exactly the ops our models use. Comparing it with ONNX Runtime checks that the bytes
 * we wrote mean what we think they mean (layouts, broadcasting, node wiring) without trusting either side alone.
 */
import { readFileSync } from 'node:fs';
import type { onnx as OnnxTypes } from 'onnx-proto';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** A dense float64 tensor in row-major order. */
export interface RefTensor {
  dims: number[];
  data: Float64Array;
}

/** The parsed model, ready to evaluate. */
export interface RefModel {
  proto: OnnxTypes.ModelProto;
  initializers: Map<string, RefTensor>;
  inputName: string;
  outputName: string;
  /** Declared input/output dims, symbolic dims as strings. */
  inputDims: Array<number | string>;
  outputDims: Array<number | string>;
  opTypes: string[];
}

/** Ops this interpreter implements; anything else in a graph makes {@link loadRefModel} throw. */
export const SUPPORTED_OPS = new Set(['Sub', 'Div', 'Mul', 'Add', 'MatMul', 'Relu', 'Gemm']);

/** protobufjs decodes int64 as number or Long depending on magnitude and environment. */
function toNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

function declaredDims(info: OnnxTypes.IValueInfoProto | undefined): Array<number | string> {
  const dims = info?.type?.tensorType?.shape?.dim ?? [];
  return dims.map((d) => (d.dimParam ? d.dimParam : toNumber(d.dimValue)));
}

function readInitializer(t: OnnxTypes.ITensorProto): RefTensor {
  if (t.dataType !== onnx.TensorProto.DataType.FLOAT) throw new Error(`initializer ${t.name}: not float32`);
  const dims = (t.dims ?? []).map((d) => toNumber(d));
  const count = dims.reduce((a, b) => a * b, 1);
  const raw = t.rawData ?? new Uint8Array(0);
  let data: Float64Array;
  if (raw.length > 0) {
    if (raw.length !== count * 4) throw new Error(`initializer ${t.name}: ${raw.length} bytes for ${count} floats`);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    data = new Float64Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getFloat32(i * 4, true);
  } else {
    data = Float64Array.from(t.floatData ?? []);
    if (data.length !== count) throw new Error(`initializer ${t.name}: ${data.length} floats for ${count}`);
  }
  return { dims, data };
}

/** Parses an .onnx file into a {@link RefModel}. */
export function loadRefModel(path: string): RefModel {
  const proto = onnx.ModelProto.decode(readFileSync(path));
  const graph = proto.graph;
  if (!graph) throw new Error(`${path}: no graph`);
  const initializers = new Map<string, RefTensor>();
  for (const t of graph.initializer ?? []) initializers.set(t.name ?? '', readInitializer(t));
  const inputs = (graph.input ?? []).filter((i) => !initializers.has(i.name ?? ''));
  const outputs = graph.output ?? [];
  if (inputs.length !== 1 || outputs.length !== 1) throw new Error(`${path}: expected one input and one output`);
  const opTypes = (graph.node ?? []).map((n) => n.opType ?? '');
  for (const op of opTypes) if (!SUPPORTED_OPS.has(op)) throw new Error(`${path}: unsupported op ${op}`);
  return {
    proto,
    initializers,
    inputName: inputs[0]?.name ?? '',
    outputName: outputs[0]?.name ?? '',
    inputDims: declaredDims(inputs[0]),
    outputDims: declaredDims(outputs[0]),
    opTypes,
  };
}

function strides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = (s[i + 1] ?? 1) * (dims[i + 1] ?? 1);
  return s;
}

/** Numpy-style broadcasting of an elementwise binary op. */
function broadcast(a: RefTensor, b: RefTensor, f: (x: number, y: number) => number): RefTensor {
  const rank = Math.max(a.dims.length, b.dims.length);
  const ad = [...new Array<number>(rank - a.dims.length).fill(1), ...a.dims];
  const bd = [...new Array<number>(rank - b.dims.length).fill(1), ...b.dims];
  const dims = ad.map((x, i) => {
    const y = bd[i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`cannot broadcast [${a.dims}] with [${b.dims}]`);
    return Math.max(x, y);
  });
  const as = strides(ad);
  const bs = strides(bd);
  const os = strides(dims);
  const count = dims.reduce((p, q) => p * q, 1);
  const data = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    let ai = 0;
    let bi = 0;
    for (let r = 0; r < rank; r++) {
      const idx = Math.floor(i / (os[r] ?? 1)) % (dims[r] ?? 1);
      if ((ad[r] ?? 1) !== 1) ai += idx * (as[r] ?? 0);
      if ((bd[r] ?? 1) !== 1) bi += idx * (bs[r] ?? 0);
    }
    data[i] = f(a.data[ai] ?? 0, b.data[bi] ?? 0);
  }
  return { dims, data };
}

function matmul(a: RefTensor, b: RefTensor, transB = false): RefTensor {
  const [m = 0, k = 0] = a.dims;
  const [b0 = 0, b1 = 0] = b.dims;
  const [kb, n] = transB ? [b1, b0] : [b0, b1];
  if (a.dims.length !== 2 || b.dims.length !== 2 || k !== kb) throw new Error(`MatMul [${a.dims}] x [${b.dims}]`);
  const data = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (a.data[i * k + p] ?? 0) * (b.data[transB ? j * k + p : p * n + j] ?? 0);
      data[i * n + j] = s;
    }
  }
  return { dims: [m, n], data };
}

function attr(n: OnnxTypes.INodeProto, name: string): OnnxTypes.IAttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}

/** Runs the graph on `input` (float values, `[batch, features]`) and returns the single output. */
export function runRefModel(model: RefModel, input: RefTensor): RefTensor {
  const values = new Map<string, RefTensor>(model.initializers);
  values.set(model.inputName, input);
  const get = (name: string | undefined): RefTensor => {
    const t = name === undefined ? undefined : values.get(name);
    if (!t) throw new Error(`missing value ${name}`);
    return t;
  };
  for (const n of model.proto.graph?.node ?? []) {
    const [x, y, z] = n.input ?? [];
    let out: RefTensor;
    switch (n.opType) {
      case 'Sub':
        out = broadcast(get(x), get(y), (p, q) => p - q);
        break;
      case 'Div':
        out = broadcast(get(x), get(y), (p, q) => p / q);
        break;
      case 'Mul':
        out = broadcast(get(x), get(y), (p, q) => p * q);
        break;
      case 'Add':
        out = broadcast(get(x), get(y), (p, q) => p + q);
        break;
      case 'MatMul':
        out = matmul(get(x), get(y));
        break;
      case 'Relu': {
        const t = get(x);
        out = { dims: [...t.dims], data: t.data.map((v) => Math.max(v, 0)) };
        break;
      }
      case 'Gemm': {
        if (toNumber(attr(n, 'transA')?.i) !== 0) throw new Error('Gemm transA unsupported');
        const alpha = attr(n, 'alpha')?.f ?? 1;
        const beta = attr(n, 'beta')?.f ?? 1;
        const prod = matmul(get(x), get(y), toNumber(attr(n, 'transB')?.i) === 1);
        out = z
          ? broadcast(prod, get(z), (p, q) => alpha * p + beta * q)
          : { dims: prod.dims, data: prod.data.map((p) => alpha * p) };
        break;
      }
      default:
        throw new Error(`unsupported op ${n.opType}`);
    }
    values.set(n.output?.[0] ?? '', out);
  }
  return get(model.outputName);
}
