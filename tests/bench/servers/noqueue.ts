/**
 * What a user would write without Quern: one Node process, an ONNX Runtime session with its
 * default options, and a route that runs each request on its own (no queue, no batching).
 */
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import ort from 'onnxruntime-node';

const modelsDir = process.env.QUERN_MODELS_DIR as string;
const session = await ort.InferenceSession.create(join(modelsDir, 'mlp-large.onnx'));
const app = new Hono();
app.post('/v1/predict', async (c) => {
  const { features } = (await c.req.json()) as { features: number[] };
  if (!Array.isArray(features) || features.length !== 256) return c.json({ error: 'bad features' }, 422);
  const out = await session.run({ features: new ort.Tensor('float32', Float32Array.from(features), [1, 256]) });
  return c.json({ prediction: Array.from(out.scores?.data as Float32Array) });
});
serve({ fetch: app.fetch, hostname: '127.0.0.1', port: Number(process.env.PORT) }, () =>
  process.stdout.write('listening\n'),
);
