import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { ensurePythonVenv, type PythonVenv, runCommand, TEST_API_KEY } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';

/**
 * Schemathesis (from PyPI, pinned in tests/clients/requirements.txt) fuzzes every operation of
 * the served `/openapi.json` over HTTP, with a key, against a real stack (Redis, BullMQ, ONNX
 * Runtime): its examples, the boundaries of each schema, random valid and invalid inputs, and
 * sequences that follow the document's links (a job's id from `POST /v1/jobs` to its reads,
 * events and cancel). Every answer must be no 5xx, a status the operation documents, the
 * documented media type and headers, and a body its schema accepts (each event of an event
 * stream included); the other checks are listed in `CHECKS`.
 *
 * Bounded for CI: `SCHEMATHESIS_MAX_EXAMPLES` cases per operation and phase (default 25, about
 * a minute on two cores). The seed is random and printed; `SCHEMATHESIS_SEED` replays a run.
 */
const CHECKS = [
  'not_a_server_error',
  'status_code_conformance',
  'content_type_conformance',
  'response_headers_conformance',
  'response_schema_conformance',
  // Invalid input is refused (4xx), a required header left out too, a protected operation
  // without the key is refused, a created resource can be read, and a method a path does not
  // serve is a 405 that names those it does.
  'negative_data_rejection',
  'missing_required_header',
  'ignored_auth',
  'ensure_resource_availability',
  'allow_header_conformance',
  'unsupported_method',
  // Not checked, by design: positive_data_acceptance (a row's width depends on the model named
  // in the body, which one schema cannot say, so most generated rows are rightly refused with
  // 422), and use_after_free (DELETE cancels a job or revokes a key, and both stay readable,
  // `canceled` or with `revoked_at`, rather than answering 404).
];
const MAX_EXAMPLES = process.env.SCHEMATHESIS_MAX_EXAMPLES ?? '25';

let stack: Stack;
let server: ReturnType<typeof serve>;
let base: string;
let venv: PythonVenv;
// Schemathesis and Hypothesis keep state in the folder they run in: a temporary one, not the tree.
const workDir = mkdtempSync(join(tmpdir(), 'quern-schemathesis-'));

beforeAll(async () => {
  venv = await ensurePythonVenv({
    dir: 'tests/clients/.venv',
    requirements: 'tests/clients/requirements.txt',
    label: 'schemathesis',
  });
  // The fuzzer's thousands of requests would otherwise spend the key's minute mostly on 429s.
  stack = await startStack({
    QUERN_RATE_PREMIUM_PER_MINUTE: '10000000',
    QUERN_RATE_PREMIUM_PER_HOUR: '100000000',
  });
  server = serve({ fetch: stack.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 600_000);

afterAll(async () => {
  server?.close();
  await stack?.close();
  rmSync(workDir, { recursive: true, force: true });
});

describe('schemathesis over /openapi.json', () => {
  it('finds no 5xx, no undocumented status, and no answer that breaks its own schema', async () => {
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, object> };
    const operations = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    const args = [
      'run',
      `${base}/openapi.json`,
      '--header',
      `X-API-Key: ${TEST_API_KEY}`,
      '--checks',
      CHECKS.join(','),
      '--max-examples',
      MAX_EXAMPLES,
      // One worker: Python 3.11's ast module breaks when Hypothesis describes filters in several
      // threads at once ("AST constructor recursion depth mismatch"), and two cores gain little.
      '--workers',
      '1',
      // An event stream that never ended would hang the run; none should take this long.
      '--request-timeout',
      '20',
      '--generation-database',
      'none',
      '--no-color',
      ...(process.env.SCHEMATHESIS_SEED ? ['--seed', process.env.SCHEMATHESIS_SEED] : []),
    ];
    const run = await runCommand(venv.bin('schemathesis'), args, {
      cwd: workDir,
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    const report = run.output.slice(-12_000);
    expect(run.code, report).toBe(0);
    // Every operation of the document was tested, and cases ran.
    expect(run.output).toMatch(new RegExp(`Tested:\\s+${operations}\\b`));
    expect(run.output).toMatch(/\d+ generated, \d+ passed/);
    expect(run.output).not.toMatch(/Runtime Error/);
  });
});
