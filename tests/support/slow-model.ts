import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelEntry } from '@quern/shared';
import { encodeModel, floatInitializer, floatValueInfo, node } from '../../models/build/onnx-graph';

/**
 * A deliberately slow model for fault tests: 256 → 1024, then `depth` more 1024 × 1024 MatMul +
 * Relu layers that all share one weight matrix (so the file stays small while each row costs
 * depth × 1 M multiply-adds), then → 8. Written into `dir`; returns its manifest entry.
 */
export function writeSlowModel(dir: string, name: string, depth: number, batching: ModelEntry['batching']): ModelEntry {
  let seed = 1;
  const uniform = (n: number, limit: number) =>
    Float32Array.from({ length: n }, () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return ((seed / 2147483648) * 2 - 1) * limit;
    });
  const nodes = [node('MatMul', ['features', 'w_in'], ['h0'])];
  for (let i = 0; i < depth; i++) {
    nodes.push(node('MatMul', [`h${i}`, 'w_hidden'], [`m${i}`]));
    nodes.push(node('Relu', [`m${i}`], [`h${i + 1}`]));
  }
  nodes.push(node('MatMul', [`h${depth}`, 'w_out'], ['scores']));
  const bytes = encodeModel({
    name,
    docString: 'slow model for fault tests',
    nodes,
    initializers: [
      floatInitializer('w_in', [256, 1024], uniform(256 * 1024, 0.1)),
      // Small weights: activations shrink towards zero instead of overflowing.
      floatInitializer('w_hidden', [1024, 1024], uniform(1024 * 1024, 0.05)),
      floatInitializer('w_out', [1024, 8], uniform(1024 * 8, 0.1)),
    ],
    inputs: [floatValueInfo('features', ['batch', 256])],
    outputs: [floatValueInfo('scores', ['batch', 8])],
  });
  const file = `${name}.onnx`;
  writeFileSync(join(dir, file), bytes);
  return {
    name,
    version: '1.0.0',
    file,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    description: 'slow model for fault tests',
    input: { name: 'features', features: 256 },
    output: { name: 'scores', shape: [8] },
    batching,
  };
}
