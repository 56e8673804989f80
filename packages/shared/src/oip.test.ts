import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jobView } from './job-view';
import { InferenceJobData, type InferenceResult } from './jobs';
import { loadManifest, type ModelEntry } from './model-manifest';
import { oipTensors } from './oip';

const manifest = loadManifest(join(import.meta.dirname, '../../../models'));
const cars = manifest.models.find((m) => m.name === 'cars-mpg') as ModelEntry;
const mlp = manifest.models.find((m) => m.name === 'mlp-large') as ModelEntry;

const data = (extra: Record<string, unknown>) =>
  InferenceJobData.parse({
    v: 1,
    model: 'cars-mpg',
    model_version: '1.0.0',
    input: { count: 2, width: 6, f32: Buffer.alloc(48).toString('base64') },
    mode: 'sync',
    owner: 'key_1',
    request_id: 'req_1',
    created_at: 1,
    deadline_at: 2,
    priority: 1,
    ...extra,
  });

const result: InferenceResult = {
  outputs: [[24.8987865], [13.25]],
  cached: [false, false],
  model_version: '1.0.0',
  started_at: 1,
  finished_at: 2,
  timings: { queue_ms: 1, inference_ms: 0.5, batch_size: 2 },
};

describe('the OIP marker of the job contract', () => {
  it('shows a job made through /v2 as an OIP inference response, with the request id', () => {
    const view = jobView(
      { id: 'job_1', data: data({ oip: { id: 'r1' } }), state: 'completed', returnvalue: result, timestamp: 1 },
      cars,
    );
    expect(view.output).toEqual({
      model_name: 'cars-mpg',
      model_version: '1.0.0',
      id: 'r1',
      outputs: [{ name: 'mpg', datatype: 'FP32', shape: [2, 1], data: [24.8987865, 13.25] }],
    });
  });

  it('leaves other jobs as they were, and is checked like the rest of the job data', () => {
    const view = jobView({ id: 'job_1', data: data({}), state: 'completed', returnvalue: result, timestamp: 1 }, cars);
    expect(view.output).toEqual({ predictions: [24.8987865, 13.25] });
    expect(InferenceJobData.safeParse({ ...data({}), oip: { id: 'x'.repeat(257) } }).success).toBe(false);
    expect(InferenceJobData.safeParse({ ...data({}), oip: 'yes' }).success).toBe(false);
  });

  it('gives each model’s tensors with the batch dimension as -1', () => {
    expect(oipTensors(mlp)).toEqual({
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 256] }],
      outputs: [{ name: 'scores', datatype: 'FP32', shape: [-1, 8] }],
    });
  });
});
