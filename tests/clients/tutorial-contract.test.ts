import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { ensurePythonVenv, type PythonVenv, runCommand, TEST_API_KEY } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';

/**
 * The tutorial's own test suite (tests/clients/tutorial/test_api.py, its tests/test_api.py with
 * only the base URL, key and feature counts changed) run with pytest and httpx over HTTP against
 * a real stack: API, Redis, BullMQ and ONNX Runtime. Where Quern answers differently on purpose
 * the test says so, and docs/compatibility.md explains it. The first run makes
 * tests/clients/.venv from PyPI (tests/clients/requirements.txt).
 */
let stack: Stack;
let server: ReturnType<typeof serve>;
let base: string;
let venv: PythonVenv;

beforeAll(async () => {
  venv = await ensurePythonVenv({
    dir: 'tests/clients/.venv',
    requirements: 'tests/clients/requirements.txt',
    label: 'tutorial contract',
  });
  stack = await startStack();
  server = serve({ fetch: stack.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 600_000);

afterAll(async () => {
  server?.close();
  await stack?.close();
});

describe('the tutorial’s tests/test_api.py, over HTTP', () => {
  it('passes every test with pytest and httpx', async () => {
    const run = await runCommand(
      venv.python,
      // No cache folder and no bytecode: the run leaves the working tree as it found it.
      ['-m', 'pytest', 'tests/clients/tutorial/test_api.py', '-v', '-p', 'no:cacheprovider', '--no-header'],
      {
        env: {
          ...process.env,
          QUERN_URL: base,
          QUERN_API_KEY: TEST_API_KEY,
          PYTHONDONTWRITEBYTECODE: '1',
        },
      },
    );
    expect(run.code, run.output).toBe(0);
    // Every test of the tutorial ran and passed: none skipped, none deselected.
    for (const name of [
      'test_root',
      'test_health',
      'test_predict_no_api_key',
      'test_predict_with_api_key',
      'test_batch_predict',
    ]) {
      expect(run.output).toMatch(new RegExp(`test_api\\.py::${name} PASSED`));
    }
    expect(run.output).toMatch(/\b5 passed\b/);
  });
});
