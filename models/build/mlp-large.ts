/**
 * Builds `mlp-large.onnx`: a synthetic 256 → 1024 → ReLU → 1024 → ReLU → 8 MLP with fixed pseudo-random weights.
 *
 * It exists to exercise the serving path under load: ~1.3 M multiply-adds per row makes per-row cost large enough
 * that dynamic batching visibly pays off, while the weights are deterministic so benchmark runs and tests are
 * comparable across machines. Nothing is trained; the outputs carry no meaning beyond being stable and O(1).
 */
import type { onnx as OnnxTypes } from 'onnx-proto';
import { BATCH_DIM, encodeModel, floatInitializer, floatValueInfo, node } from './onnx-graph';
import { createPrng, uniformFloat32 } from './prng';

/** Layer widths, input first. */
export const MLP_LARGE_LAYERS = [256, 1024, 1024, 8] as const;
/** Seed of the weight stream; changing it changes the model bytes and its manifest sha256. */
export const MLP_LARGE_SEED = 256;

/** Weights and biases per layer, float32, weight matrices `[in, out]` row-major (ONNX MatMul layout). */
export interface MlpLargeWeights {
  seed: number;
  layers: Array<{ inputs: number; outputs: number; weight: Float32Array; bias: Float32Array }>;
}

/**
 * Generates the weights. Hidden layers use He-uniform (limit √(6/fan_in)), which keeps the activation variance
 * roughly constant through ReLU layers; the linear output layer uses Xavier-uniform (√(6/(fan_in+fan_out))), so
 * outputs for inputs uniform in [-1, 1] have a standard deviation of about 0.5–1 — neither exploding nor
 * collapsing to zero. Biases are small (±0.05) but non-zero so that the Add nodes are actually exercised.
 */
export function mlpLargeWeights(seed: number = MLP_LARGE_SEED): MlpLargeWeights {
  const prng = createPrng(seed);
  const layers: MlpLargeWeights['layers'] = [];
  for (let l = 0; l + 1 < MLP_LARGE_LAYERS.length; l++) {
    const inputs = MLP_LARGE_LAYERS[l] ?? 0;
    const outputs = MLP_LARGE_LAYERS[l + 1] ?? 0;
    const isOutput = l + 2 === MLP_LARGE_LAYERS.length;
    const limit = isOutput ? Math.sqrt(6 / (inputs + outputs)) : Math.sqrt(6 / inputs);
    const weight = uniformFloat32(prng, inputs * outputs, limit);
    const bias = uniformFloat32(prng, outputs, 0.05);
    layers.push({ inputs, outputs, weight, bias });
  }
  return { seed, layers };
}

/** Encodes the weights as MatMul → Add (→ Relu) blocks with input `features` `[batch, 256]`, output `scores`. */
export function encodeMlpLarge(weights: MlpLargeWeights): Uint8Array {
  const nodes: OnnxTypes.INodeProto[] = [];
  const initializers: OnnxTypes.ITensorProto[] = [];
  let current = 'features';
  weights.layers.forEach((layer, i) => {
    const last = i === weights.layers.length - 1;
    const p = `fc${i + 1}`;
    initializers.push(floatInitializer(`${p}.weight`, [layer.inputs, layer.outputs], layer.weight));
    initializers.push(floatInitializer(`${p}.bias`, [layer.outputs], layer.bias));
    nodes.push(node('MatMul', [current, `${p}.weight`], [`${p}.matmul`]));
    const added = last ? 'scores' : `${p}.out`;
    nodes.push(node('Add', [`${p}.matmul`, `${p}.bias`], [added]));
    if (!last) {
      nodes.push(node('Relu', [added], [`${p}.relu`]));
      current = `${p}.relu`;
    }
  });
  const inputs = MLP_LARGE_LAYERS[0];
  const outputs = MLP_LARGE_LAYERS[MLP_LARGE_LAYERS.length - 1] ?? 0;
  return encodeModel({
    name: 'mlp_large',
    docString:
      'Synthetic 256-1024-1024-8 ReLU MLP with fixed pseudo-random weights (mulberry32, He/Xavier uniform); ' +
      'for load tests and batching benchmarks. Outputs have no meaning.',
    nodes,
    initializers,
    inputs: [floatValueInfo('features', [BATCH_DIM, inputs], 'any values; benchmarks use uniform [-1, 1]')],
    outputs: [floatValueInfo('scores', [BATCH_DIM, outputs])],
    metadata: [['seed', String(weights.seed)]],
  });
}

/** The whole mlp-large build: deterministic weights, encoded. */
export function buildMlpLarge(seed: number = MLP_LARGE_SEED): { onnx: Uint8Array; weights: MlpLargeWeights } {
  const weights = mlpLargeWeights(seed);
  return { onnx: encodeMlpLarge(weights), weights };
}
