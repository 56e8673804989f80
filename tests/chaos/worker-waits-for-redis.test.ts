import { APP_ENTRY, freePort, ServiceProcess, waitForHttp } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

let harness: Harness;
let late: ServiceProcess | undefined;

beforeAll(async () => {
  // API only; the worker of this test starts before its Redis exists.
  harness = await Harness.start({ workers: 0 });
});

afterAll(async () => {
  await late?.stop('SIGKILL');
  await harness?.close();
});

describe('fault 9: a worker started while Redis is unreachable', () => {
  it('waits, and connects and works when Redis appears', async () => {
    await harness.redis.stop({ keepDir: true });
    const port = await freePort();
    late = new ServiceProcess({
      name: 'late-worker',
      entry: APP_ENTRY.worker,
      env: { ...harness.env, QUERN_WORKER_PORT: String(port) },
    });
    // It is alive and says so, but not ready, while Redis is away.
    await waitForHttp(`http://127.0.0.1:${port}/health`, 60_000);
    const notReady = await fetch(`http://127.0.0.1:${port}/ready`);
    expect(notReady.status).toBe(503);
    // The names of earlier versions answer alike, so probes already configured keep working.
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(503);
    expect(late.running).toBe(true);

    const back = Date.now();
    await harness.redis.restart();
    await waitForHttp(`http://127.0.0.1:${port}/ready`, 30_000);
    const readyMs = Date.now() - back;
    // The API reconnects on its own backoff; once it is ready again the late worker serves its jobs.
    await waitForHttp(`${harness.url}/ready`, 30_000);
    const res = await harness.fetch('/v1/predict', {
      method: 'POST',
      body: JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] }),
    });
    report('fault-9-worker-before-redis', { worker_ready_after_redis_ms: readyMs, predict_status: res.status });
    expect(res.status).toBe(200);
  });
});
