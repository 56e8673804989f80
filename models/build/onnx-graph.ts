/**
 * Minimal helpers for writing ONNX models from TypeScript with `onnx-proto` (the ONNX protobuf schema compiled
 * for protobufjs), so the build needs no Python toolchain.
 *
 * Reproducibility: protobufjs encodes fields in schema order and we never put timestamps, hostnames or random ids
 * into the model, so the same inputs always encode to the same bytes. Float tensors are written as explicit
 * little-endian float32 `raw_data` (via DataView, independent of the host's endianness), which is what ONNX
 * requires for `raw_data` and what ONNX Runtime loads fastest.
 */

import type { onnx as OnnxTypes } from 'onnx-proto';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** Fixed producer identity written into every model; changing it changes the bytes and hence the manifest hashes. */
export const PRODUCER_NAME = 'quern-models';
/** Bumped only when the build scripts change in a way that should be visible in the model metadata. */
export const PRODUCER_VERSION = '1.0.0';
/** ONNX IR version 8 (ONNX 1.10+) — loaded by onnxruntime-node 1.30 and the newest the onnx-proto schema knows. */
export const IR_VERSION = 8;
/** Default-domain opset; every op we emit (Sub, Div, MatMul, Add, Relu) is unchanged in it since opset 14. */
export const OPSET_VERSION = 17;
/** Name of the symbolic leading dimension, so one model serves any batch size. */
export const BATCH_DIM = 'batch';

/** A dimension: a fixed size, or a symbolic name such as {@link BATCH_DIM}. */
export type Dim = number | string;

/** Encodes a float array as little-endian float32 bytes, rounding each value with `Math.fround`. */
export function float32LeBytes(values: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i] ?? 0, true);
  return bytes;
}

/** A float32 constant tensor (weights, biases, normalisation constants) stored in the graph. */
export function floatInitializer(
  name: string,
  dims: readonly number[],
  values: ArrayLike<number>,
): OnnxTypes.ITensorProto {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (values.length !== expected) {
    throw new Error(`initializer ${name}: ${values.length} values for dims [${dims.join(', ')}] (${expected})`);
  }
  return {
    name,
    dataType: onnx.TensorProto.DataType.FLOAT,
    dims: [...dims],
    rawData: float32LeBytes(values),
  };
}

/** A graph node with no attributes (all ops we use rely on their defaults). */
export function node(opType: string, inputs: readonly string[], outputs: readonly string[]): OnnxTypes.INodeProto {
  return { opType, input: [...inputs], output: [...outputs], name: `${outputs[0] ?? opType}_${opType}` };
}

/** Declares a float32 graph input or output; string dims become symbolic (`dim_param`). */
export function floatValueInfo(name: string, dims: readonly Dim[], docString?: string): OnnxTypes.IValueInfoProto {
  return {
    name,
    ...(docString === undefined ? {} : { docString }),
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** Everything needed to assemble a single-graph model. */
export interface GraphSpec {
  /** Graph name, shown by tools such as Netron. */
  name: string;
  /** Human-readable description stored as the model's doc string. */
  docString: string;
  nodes: OnnxTypes.INodeProto[];
  initializers: OnnxTypes.ITensorProto[];
  inputs: OnnxTypes.IValueInfoProto[];
  outputs: OnnxTypes.IValueInfoProto[];
  /** Free-form key/value metadata; written in the given order so the encoding stays deterministic. */
  metadata?: ReadonlyArray<readonly [string, string]>;
  /** Integer model version stored in the ModelProto (the manifest carries the semver string). */
  modelVersion?: number;
}

/** Builds and serialises a ModelProto. Pure function of its input: same spec, same bytes. */
export function encodeModel(spec: GraphSpec): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET_VERSION }],
    producerName: PRODUCER_NAME,
    producerVersion: PRODUCER_VERSION,
    domain: 'ai.quern',
    modelVersion: spec.modelVersion ?? 1,
    docString: spec.docString,
    metadataProps: (spec.metadata ?? []).map(([key, value]) => ({ key, value })),
    graph: {
      name: spec.name,
      node: spec.nodes,
      initializer: spec.initializers,
      input: spec.inputs,
      output: spec.outputs,
    },
  });
  const err = onnx.ModelProto.verify(model);
  if (err) throw new Error(`invalid ModelProto: ${err}`);
  return onnx.ModelProto.encode(model).finish();
}
