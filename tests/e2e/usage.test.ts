import { OTHER_API_KEY } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';

/** Usage per key and hour (`GET /v1/usage`, `GET /v1/admin/keys/{id}/usage`), written by the worker. */

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ QUERN_CACHE_TTL_SECONDS: '0' });
});

afterAll(async () => {
  await stack.close();
});

interface Usage {
  key_id: string;
  hours: { hour: string; jobs: number; rows: number; inference_ms: number; failed_jobs: number }[];
  total: { jobs: number; rows: number; inference_ms: number; failed_jobs: number };
}

describe('usage per key', () => {
  it('counts jobs, rows, inference time and failures of the key, readable by the key and by an admin', async () => {
    const car = (year: number) => [4, 140, 90, 2264, 15.5, year];
    const batch = await stack.post(
      '/v1/batch-predict',
      { model: 'cars-mpg', requests: [{ features: car(1970) }, { features: car(1971) }] },
      { prefer: 'respond-async' },
    );
    expect(batch.status).toBe(202);
    expect((await stack.post('/v1/jobs', { model: 'cars-mpg', features: car(1972) })).status).toBe(202);
    // A row the model's output overflows on: the job fails for good.
    expect((await stack.post('/v1/jobs', { model: 'cars-mpg', features: car(3e38) })).status).toBe(202);

    let usage: Usage | undefined;
    await expect
      .poll(
        async () => {
          usage = (await (await stack.get('/v1/usage?hours=2')).json()) as Usage;
          return usage.total;
        },
        { timeout: 20_000 },
      )
      .toMatchObject({ jobs: 2, rows: 3, failed_jobs: 1 });
    expect(usage?.hours).toHaveLength(2);
    expect(usage?.total.inference_ms).toBeGreaterThan(0);

    const other = (await (await stack.get('/v1/usage', OTHER_API_KEY)).json()) as Usage;
    expect(other.total).toEqual({ jobs: 0, rows: 0, inference_ms: 0, failed_jobs: 0 });
    expect(other.hours).toHaveLength(24);

    const admin = (await (await stack.get(`/v1/admin/keys/${usage?.key_id}/usage?hours=2`)).json()) as Usage;
    expect(admin).toEqual(usage);
    expect((await stack.get('/v1/admin/keys/key_0000000000000000000000/usage')).status).toBe(404);
    expect((await stack.get('/v1/usage?hours=0')).status).toBe(422);
  });
});
