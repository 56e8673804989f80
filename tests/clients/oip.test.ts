import { readdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import {
  DirectOrt,
  ensurePythonVenv,
  maxAbsDiff,
  OTHER_API_KEY,
  type PythonVenv,
  randomRows,
  runCommand,
  TEST_API_KEY,
} from '@quern/devkit';
import type { ModelEntry } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPerfAnalyzerCommand } from '../bench/perf-analyzer';
import { type Stack, startStack } from '../support/stack';

/**
 * The Open Inference Protocol v2 routes checked with the real clients from PyPI
 * (tests/clients/requirements.txt, made into tests/clients/.venv on first use): NVIDIA's
 * tritonclient[http], sync and asyncio, JSON and binary tensors, and perf_analyzer, over HTTP
 * against a real stack (API, Redis, BullMQ, ONNX Runtime). Outputs are compared with ONNX Runtime
 * run directly.
 */
let stack: Stack;
let server: ReturnType<typeof serve>;
let base: string;
let venv: PythonVenv;
const direct = new Map<string, DirectOrt>();

/** Small enough that a binary body over it is quick to send; big enough for every check here. */
const BODY_LIMIT = 64 * 1024;

const CARS = [
  [4, 140, 90, 2264, 15.5, 1971],
  [8, 350, 165, 3693, 11.5, 1970],
  [4, 97, 46, 1835, 20.5, 1970],
];

/**
 * Where the venv's nvidia-cuda-runtime-cu12 put libcudart.so.12: perf_analyzer links it (and
 * runs on CPU), and the loader must be told where it is.
 */
function cudaRuntimeDir(): string {
  const lib = join(venv.dir, 'lib');
  const python = readdirSync(lib).find((d) => d.startsWith('python3')) ?? 'python3';
  return join(lib, python, 'site-packages', 'nvidia', 'cuda_runtime', 'lib');
}

function model(name: string): ModelEntry {
  return stack.manifest.models.find((m) => m.name === name) as ModelEntry;
}

beforeAll(async () => {
  venv = await ensurePythonVenv({
    dir: 'tests/clients/.venv',
    requirements: 'tests/clients/requirements.txt',
    label: 'oip clients',
  });
  // The free tier's minute budget is small, for the rate-limit check; the test keys are premium.
  stack = await startStack({ QUERN_BODY_LIMIT_BYTES: String(BODY_LIMIT), QUERN_RATE_FREE_PER_MINUTE: '3' });
  server = serve({ fetch: stack.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  base = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const name of ['cars-mpg', 'mlp-large']) {
    direct.set(name, await DirectOrt.load(stack.config.QUERN_MODELS_DIR, model(name)));
  }
}, 600_000);

afterAll(async () => {
  for (const ort of direct.values()) await ort.release();
  server?.close();
  await stack?.close();
});

interface InferReport {
  outputs: number[][];
  id?: string;
  model_version?: string;
}
interface Report {
  sync: {
    server_live: boolean;
    server_ready: boolean;
    server_metadata: { name: string; extensions: string[] };
    models: Record<
      string,
      {
        ready: boolean;
        metadata: { versions: string[]; inputs: { shape: number[]; datatype: string }[]; outputs: unknown[] };
        config: { max_batch_size: number; input: { dims: number[]; data_type: string }[] };
      }
    >;
    infer: Record<string, InferReport>;
    errors: Record<string, { status: string | null; message: string } | null>;
  };
  aio: { server_live: boolean; infer: Record<string, { outputs: number[][][] }> };
}

describe('tritonclient[http] against Quern', () => {
  let report: Report;
  const rows = () => ({ 'cars-mpg': CARS, 'mlp-large': randomRows(3, 256, 14) });

  beforeAll(async () => {
    const cases = Object.entries(rows()).map(([name, data]) => ({
      model: name,
      input: model(name).input.name,
      output: model(name).output.name,
      rows: data,
    }));
    const job = JSON.stringify({ url: base, key: TEST_API_KEY, cases });
    const run = await runCommand(venv.python, ['tests/clients/oip/tritonclient_check.py', job], {
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    const line = run.output.split('\n').find((l) => l.startsWith('OIP-REPORT '));
    expect(run.code, run.output).toBe(0);
    expect(line, run.output).toBeDefined();
    report = JSON.parse((line as string).slice('OIP-REPORT '.length)) as Report;
  }, 120_000);

  it('reads health, server metadata, model metadata (batch dimension -1) and Triton’s model config', () => {
    const { sync } = report;
    expect(sync.server_live).toBe(true);
    expect(sync.server_ready).toBe(true);
    expect(sync.server_metadata.name).toBe('quern');
    expect(sync.server_metadata.extensions).toContain('binary_tensor_data');
    const cars = sync.models['cars-mpg'];
    expect(cars?.ready).toBe(true);
    expect(cars?.metadata.versions).toEqual([model('cars-mpg').version]);
    expect(cars?.metadata.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, 6] }]);
    expect(cars?.metadata.outputs).toEqual([{ name: 'mpg', datatype: 'FP32', shape: [-1, 1] }]);
    expect(cars?.config.max_batch_size).toBe(model('cars-mpg').batching.max_batch_size);
    expect(cars?.config.input).toEqual([{ name: 'features', data_type: 'TYPE_FP32', dims: [6] }]);
    expect(sync.models['mlp-large']?.metadata.outputs).toEqual([{ name: 'scores', datatype: 'FP32', shape: [-1, 8] }]);
  });

  it('infers with JSON and binary tensors, sync, greenlet async and asyncio clients: ONNX Runtime’s outputs', async () => {
    for (const [name, data] of Object.entries(rows())) {
      const expected = await (direct.get(name) as DirectOrt).run(data);
      const runs = [
        ...['sync/json', 'sync/binary', 'async_infer/json', 'async_infer/binary', 'sync/versioned'].map(
          (kind) => [kind, report.sync.infer[`${name}/${kind}`]?.outputs] as const,
        ),
        ...['aio/json', 'aio/binary'].flatMap((kind) =>
          (report.aio.infer[`${name}/${kind}`]?.outputs ?? [undefined]).map((o, i) => [`${kind}#${i}`, o] as const),
        ),
      ];
      expect(runs).toHaveLength(5 + 8);
      for (const [kind, outputs] of runs) {
        expect(outputs, `${name} ${kind}`).toBeDefined();
        expect(maxAbsDiff(outputs ?? [], expected), `${name} ${kind}`).toBeLessThan(1e-4);
      }
    }
    expect(report.sync.infer['cars-mpg/sync/json']).toMatchObject({ id: 'cars-mpg-sync', model_version: '1.0.0' });
    expect(report.aio.server_live).toBe(true);
  });

  it('surfaces Quern’s errors through tritonclient: 400 for shape and datatype, 404 model, 401 without a key', () => {
    const { errors } = report.sync;
    expect(errors.wrong_shape?.status).toBe('400');
    expect(errors.wrong_shape?.message).toMatch(
      /unexpected shape for input 'features'.*expected \[-1,6\], got \[1,5\]/,
    );
    expect(errors.wrong_datatype?.status).toBe('400');
    expect(errors.wrong_datatype?.message).toMatch(/data-type is 'FP64', but model 'cars-mpg' expects 'FP32'/);
    expect(errors.unknown_model?.status).toBe('404');
    expect(errors.unknown_model?.message).toMatch(/no model named 'no-such-model'/);
    expect(errors.no_key?.status).toBe('401');
  });
});

describe('the OIP routes over HTTP', () => {
  const url = (path: string) => `http://${base}${path}`;
  const headers = { 'x-api-key': TEST_API_KEY };

  it('Prefer: respond-async answers 202 with Location; the job’s output is then an OIP response; priority and timeout map', async () => {
    const res = await fetch(url('/v2/models/cars-mpg/infer'), {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json', prefer: 'respond-async' },
      body: JSON.stringify({
        id: 'async-1',
        parameters: { priority: 50, timeout: 5_000_000 },
        inputs: [{ name: 'features', shape: [2, 6], datatype: 'FP32', data: CARS.slice(0, 2) }],
      }),
    });
    expect(res.status, await res.clone().text()).toBe(202);
    expect(res.headers.get('preference-applied')).toBe('respond-async');
    const location = res.headers.get('location') as string;
    expect(location).toMatch(/^\/v1\/jobs\/job_/);
    let job: { status: string; output: unknown; priority: number; created_at: string; expires_at: string } =
      (await res.json()) as typeof job;
    // parameters.priority is the job's priority; parameters.timeout (µs) its deadline.
    expect(job.priority).toBe(50);
    expect(Date.parse(job.expires_at) - Date.parse(job.created_at)).toBe(5000);
    const deadline = Date.now() + 20_000;
    while (job.status !== 'succeeded' && Date.now() < deadline) {
      job = (await (await fetch(url(location), { headers })).json()) as typeof job;
      if (job.status === 'failed') break;
    }
    expect(job.status).toBe('succeeded');
    const expected = await (direct.get('cars-mpg') as DirectOrt).run(CARS.slice(0, 2));
    const output = job.output as { model_name: string; id: string; outputs: { shape: number[]; data: number[] }[] };
    expect(output).toMatchObject({ model_name: 'cars-mpg', model_version: '1.0.0', id: 'async-1' });
    expect(output.outputs[0]?.shape).toEqual([2, 1]);
    expect(maxAbsDiff([output.outputs[0]?.data ?? []], [expected.flat()])).toBeLessThan(1e-4);
    // Another principal's key finds no such job.
    const other = await fetch(url(location), { headers: { 'x-api-key': OTHER_API_KEY } });
    expect(other.status).toBe(404);
  });

  it('coalesces concurrent OIP calls of one principal into shared jobs (not with /v1 calls), each getting its rows', async () => {
    const queue = stack.services.jobs.queueOf('mlp-large');
    await queue.pause();
    /** Rows the API has looked up in the result cache: each call does so just before its job. */
    const misses = async () => {
      const text = await (await fetch(url('/metrics'))).text();
      const line = /^quern_result_cache_lookups_total\{[^}]*model="mlp-large"[^}]*result="miss"[^}]*\} (\d+)/m.exec(
        text,
      );
      return Number(line?.[1] ?? 0);
    };
    const before = await misses();
    const rows = randomRows(10, 256, 31);
    const infer = (features: number[]) =>
      fetch(url('/v2/models/mlp-large/infer'), {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'features', shape: [1, 256], datatype: 'FP32', data: features }] }),
      });
    const pending = rows.map(infer);
    const v1 = fetch(url('/v1/predict'), {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mlp-large', features: randomRows(1, 256, 32)[0] }),
    });
    try {
      // Every call has reached its sync path (its cache lookup is its last step before it)...
      await expect.poll(misses, { timeout: 5_000, interval: 10 }).toBe(before + 11);
      // ...and while the queue holds the group's job, the other calls gather instead of each adding
      // one: one queued OIP job (marked `oip`) and one /v1 job.
      const queued = async () =>
        (await queue.getJobs(['waiting', 'prioritized'])).map((j) => (j.data as { oip?: unknown }).oip !== undefined);
      await expect.poll(async () => (await queued()).sort(), { timeout: 5_000, interval: 10 }).toEqual([false, true]);
    } finally {
      await queue.resume();
    }
    const answers = await Promise.all(pending);
    expect((await v1).status).toBe(200);
    const bodies = (await Promise.all(answers.map((r) => r.json()))) as {
      parameters: { quern_job_id: string };
      outputs: { data: number[] }[];
    }[];
    expect(answers.map((r) => r.status)).toEqual(rows.map(() => 200));
    const expected = await (direct.get('mlp-large') as DirectOrt).run(rows);
    expect(
      maxAbsDiff(
        bodies.map((b) => b.outputs[0]?.data ?? []),
        expected,
      ),
    ).toBeLessThan(1e-4);
    // The first call's job, then one job for the nine that gathered behind it.
    expect(new Set(bodies.map((b) => b.parameters.quern_job_id)).size).toBe(2);
  });

  it('takes a binary body without a content type; the body limit counts its binary part', async () => {
    const send = (rowCount: number) => {
      const values = new Float32Array(randomRows(rowCount, 256, 3).flat());
      const header = Buffer.from(
        JSON.stringify({
          inputs: [
            {
              name: 'features',
              shape: [rowCount, 256],
              datatype: 'FP32',
              parameters: { binary_data_size: values.byteLength },
            },
          ],
        }),
      );
      return fetch(url('/v2/models/mlp-large/infer'), {
        method: 'POST',
        headers: { ...headers, 'inference-header-content-length': String(header.byteLength) },
        body: Buffer.concat([header, Buffer.from(values.buffer)]),
      });
    };
    const small = await send(2);
    expect(small.status, await small.clone().text()).toBe(200);
    expect(small.headers.get('content-type')).toMatch(/^application\/json/);
    expect(((await small.json()) as { outputs: { shape: number[] }[] }).outputs[0]?.shape).toEqual([2, 8]);
    // 64 rows × 256 FP32 = 64 KiB of tensor after a header of a hundred bytes.
    const large = await send(64);
    expect(large.status).toBe(413);
    expect(((await large.json()) as { error: string }).error).toMatch(/exceeds 65536 bytes/);
  });

  it('applies the caller’s rate limit: 429 with error, Retry-After and the RateLimit fields', async () => {
    const { key } = await stack.services.apiKeys.create({ name: 'oip-free', tier: 'free', scopes: ['predict'] });
    const call = () =>
      fetch(url('/v2/models/cars-mpg/infer'), {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: CARS[1] }] }),
      });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await call();
      statuses.push(res.status);
      await res.body?.cancel();
    }
    const limited = await call();
    expect([...statuses, limited.status]).toEqual([200, 200, 200, 429]);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.headers.get('ratelimit-policy')).toBeTruthy();
    expect(((await limited.json()) as { error: string }).error).toMatch(/rate limit of the free tier exceeded/);
  });

  it('replays a call with the same Idempotency-Key from the same job', async () => {
    const call = () =>
      fetch(url('/v2/models/cars-mpg/infer'), {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'idempotency-key': 'oip-order-1' },
        body: JSON.stringify({ inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: CARS[2] }] }),
      });
    const first = await call();
    const again = await call();
    expect([first.status, again.status]).toEqual([200, 200]);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    const [a, b] = (await Promise.all([first.json(), again.json()])) as { parameters: { quern_job_id: string } }[];
    expect(b?.parameters.quern_job_id).toBe(a?.parameters.quern_job_id);
  });

  it('answers a malformed body 400 and an unknown version 404, both with error', async () => {
    const bad = await fetch(url('/v2/models/cars-mpg/infer'), {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: '{"inputs": [',
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/not valid JSON/);
    const version = await fetch(url('/v2/models/cars-mpg/versions/9/ready'));
    expect(version.status).toBe(404);
    expect(((await version.json()) as { error: string }).error).toMatch(/has no version '9'/);
  });
});

describe('perf_analyzer (tritonclient’s wheel) against Quern', () => {
  it.each(['json', 'binary'])(
    'runs a short measurement with %s tensors and no errors',
    async (format) => {
      const run = await runPerfAnalyzerCommand(
        venv.bin('perf_analyzer'),
        [
          '-m',
          'cars-mpg',
          '--service-kind=triton',
          '-i',
          'http',
          '-u',
          base,
          '-H',
          `X-API-Key: ${TEST_API_KEY}`,
          `--input-tensor-format=${format}`,
          `--output-tensor-format=${format}`,
          '--concurrency-range',
          '4',
          '--request-count',
          '200',
        ],
        {
          ...process.env,
          LD_LIBRARY_PATH: [cudaRuntimeDir(), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
        },
        45_000,
      );
      expect(run.code, run.output).toBe(0);
      // Every request was answered: perf_analyzer stops at the first error and says so.
      expect(run.output).toMatch(/Request count: 200\b/);
      expect(run.output).not.toMatch(/error|failed/i);
    },
    120_000,
  );
});
