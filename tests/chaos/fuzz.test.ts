import { TEST_API_KEY } from '@quern/devkit';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';
import { report } from './support/harness';

/** Anything in a response body that would show the internals: stacks, paths, driver messages. */
const INTERNAL =
  /\bat [\w$.<>]+ \(|\/work\/|\/home\/|node_modules|ioredis|bullmq|ECONNREFUSED|ENOTFOUND|EPIPE|Stream isn't writeable|TypeError|ReferenceError|RangeError|Cannot read propert|undefined is not|\.ts:\d+|\.m?js:\d+/;

/** What fetch's Headers says of a header value or name it will not send (undici's wording). */
const UNSENDABLE_HEADER = /^Headers\.append: ".*" is an invalid header (value|name)\.$/s;

let stack: Stack;
let operations: { method: string; path: string; example: unknown }[];

beforeAll(async () => {
  stack = await startStack({
    QUERN_SYNC_WAIT_DEFAULT_MS: '0',
    QUERN_RATE_PREMIUM_PER_MINUTE: '0',
    QUERN_RATE_PREMIUM_PER_HOUR: '0',
    QUERN_QUEUE_MAX_DEPTH: '1000000',
  });
  const doc = (await (await stack.app.request('/openapi.json')).json()) as {
    paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { $ref?: string } }> } }>>;
    components: { schemas: Record<string, { example?: unknown }> };
  };
  operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => {
      const ref = op.requestBody?.content['application/json']?.schema.$ref?.split('/').pop();
      return { method: method.toUpperCase(), path, example: ref ? doc.components.schemas[ref]?.example : undefined };
    }),
  );
  // The queue dashboard is routed outside the document: fuzz its API too.
  operations.push(
    { method: 'GET', path: '/admin/queues/api/queues', example: undefined },
    { method: 'PUT', path: '/admin/queues/api/queues/{queue}/retry/{status}', example: undefined },
    { method: 'GET', path: '/admin/queues/api/queues/{queue}/{id}', example: undefined },
  );
});

afterAll(async () => {
  await stack?.close();
});

const printable = fc.string({
  unit: fc.constantFrom(...'abcXYZ019 _-./:;=+{}[]"\'%$#@!~*?<>\\'.split('')),
  maxLength: 80,
});
const param = fc.oneof(
  printable,
  fc.constantFrom(
    'job_0000000000000000000000',
    'key_0000000000000000000000',
    '..%2F..%2Fetc%2Fpasswd',
    '%00',
    'x'.repeat(300),
    'infer-cars-mpg',
    'webhooks',
    'completed',
    'cars-mpg',
  ),
);
const jsonish = fc.jsonValue({ maxDepth: 4 });
const features = fc.oneof(
  fc.array(fc.double(), { maxLength: 300 }),
  fc.array(fc.oneof(fc.double(), fc.string(), fc.constant(null), fc.boolean()), { maxLength: 10 }),
  fc.constant(Array.from({ length: 6 }, () => 1e308)),
);

/** A body: random JSON, random text, or the operation's example with a field swapped for something odd. */
function body(example: unknown) {
  const base = example && typeof example === 'object' ? (example as Record<string, unknown>) : {};
  const keys = [...Object.keys(base), 'features', 'model', 'requests', 'webhook', 'timeout_ms', 'priority', 'scopes'];
  return fc.oneof(
    jsonish.map((v) => JSON.stringify(v)),
    printable,
    fc
      .tuple(fc.constantFrom(...keys), fc.oneof(jsonish, features))
      .map(([k, v]) => JSON.stringify({ ...base, [k]: v })),
    features.map((f) => JSON.stringify({ ...base, features: f })),
    fc.constant(JSON.stringify(base)),
  );
}

const headers = fc.record(
  {
    'x-api-key': fc.oneof(fc.constant(TEST_API_KEY), printable),
    authorization: fc.oneof(
      printable.map((s) => `Bearer ${s}`),
      printable.map((s) => `Basic ${s}`),
      printable,
    ),
    'content-type': fc.oneof(fc.constant('application/json'), fc.constant('text/plain'), printable),
    prefer: printable,
    'idempotency-key': printable,
    'x-request-id': printable,
  },
  { requiredKeys: [] },
);

describe('abuse 10: a fuzzer driven by the OpenAPI document', () => {
  it('never gets a 5xx, and no answer shows a stack, a path or a driver message', async () => {
    const statuses = new Map<number, number>();
    let requests = 0;
    let unsendable = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: 10_000 }),
        fc.array(param, { minLength: 3, maxLength: 3 }),
        fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS'),
        fc.boolean(),
        headers,
        fc.boolean(),
        fc.nat({ max: 1_000_000 }),
        async (which, params, otherMethod, useOther, hdrs, withKey, seed) => {
          const op = operations[which % operations.length] as (typeof operations)[number];
          let i = 0;
          const path = op.path.replace(/\{[^}]+\}/g, () => encodeURIComponent(params[i++] ?? ''));
          const method = useOther ? otherMethod : op.method;
          const requestHeaders: Record<string, string> = { ...hdrs };
          if (withKey) requestHeaders['x-api-key'] = TEST_API_KEY;
          const text = fc.sample(body(op.example), { seed, numRuns: 1 })[0] as string;
          let request: Request;
          try {
            request = new Request(`http://localhost${path}`, {
              method,
              headers: requestHeaders,
              body: method === 'GET' || method === 'HEAD' ? undefined : text,
            });
          } catch (err) {
            // Only a header fetch refuses to send ends a case unsent; any other error is a failure.
            if (err instanceof TypeError && UNSENDABLE_HEADER.test(err.message)) {
              unsendable++;
              return;
            }
            throw err;
          }
          // Whatever the app does with it, it answers: an exception here fails the case.
          const res = await stack.app.request(request);
          requests++;
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const answer = await res.text();
          expect(res.status, `${method} ${path} → ${answer.slice(0, 300)}`).toBeLessThan(500);
          // The queue dashboard is an operator tool (admin scope): it names its queue library and shows
          // failed jobs' stack traces on purpose. Every client-facing answer is checked.
          if (!path.startsWith('/admin/queues')) {
            expect(answer.slice(0, 5_000), `${method} ${path}`).not.toMatch(INTERNAL);
          }
        },
      ),
      { numRuns: 4_000 },
    );
    report('abuse-10-fuzzer', {
      requests,
      unsendable,
      statuses: JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b))),
      status_5xx: [...statuses].filter(([s]) => s >= 500).reduce((n, [, c]) => n + c, 0),
    });
    expect(requests).toBeGreaterThan(3_000);
    // The fuzzer reached deep: some requests passed validation and created jobs.
    expect(statuses.get(202) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(422) ?? 0).toBeGreaterThan(0);
  });
});
