import { Agent, request as httpRequest, type Server } from 'node:http';
import { serve } from '@hono/node-server';
import { freePort, seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { runCli } from './cli';
import { SCOPES } from './services/principal';
import { createServices, type Services } from './services/services';

interface Harness {
  services: Services;
  app: ReturnType<typeof createApp>;
  lines: string[];
}

let redis: TestRedis;
const harnesses: Harness[] = [];

/** An API on the shared test Redis with its own settings and a log that the test can read. */
async function harness(overrides: Record<string, string> = {}, prefix = redis.prefix): Promise<Harness> {
  const config = testConfig({ url: redis.url, prefix }, { LOG_LEVEL: 'info', ...overrides });
  const lines: string[] = [];
  const logger = createLogger('api', 'info', { write: (line: string) => void lines.push(line) });
  const services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const h = { services, app: createApp(services, logger), lines };
  harnesses.push(h);
  return h;
}

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});
const CAR = [4, 140, 90, 2264, 15.5, 1971];

beforeAll(async () => {
  redis = await startTestRedis();
});

afterAll(async () => {
  for (const h of harnesses) await h.services.close();
  await redis.close();
});

describe('API keys', () => {
  it('admin routes create (key shown once), list (no key), get and revoke; a revoked key stops within the cache lifetime', async () => {
    const { app } = await harness();
    const admin = { 'x-api-key': TEST_API_KEY };
    const created = await app.request(
      '/v1/admin/keys',
      json({ name: 'svc', tier: 'free', scopes: ['predict'] }, admin),
    );
    expect(created.status).toBe(201);
    const body = (await created.json()) as { id: string; key: string; prefix: string; scopes: string[] };
    expect(body.key).toMatch(/^qk_[0-9A-Za-z]{43}$/);
    expect(body.prefix).toBe(body.key.slice(0, 11));
    expect(created.headers.get('location')).toBe(`/v1/admin/keys/${body.id}`);

    const list = (await (await app.request('/v1/admin/keys', { headers: admin })).json()) as { data: unknown[] };
    expect(JSON.stringify(list)).not.toContain(body.key);
    expect(list.data).toContainEqual(expect.objectContaining({ id: body.id, revoked_at: null, tier: 'free' }));
    const one = await app.request(`/v1/admin/keys/${body.id}`, { headers: admin });
    expect(await one.json()).toMatchObject({ id: body.id, scopes: ['predict'] });

    const submit = () => app.request('/v1/jobs', json({ features: CAR }, { 'x-api-key': body.key }));
    expect((await submit()).status).toBe(202);
    const token = (await (await app.request('/v1/auth/token', json({}, { 'x-api-key': body.key }))).json()) as {
      access_token: string;
    };
    expect(
      (await app.request('/v1/jobs', json({ features: CAR }, { authorization: `Bearer ${token.access_token}` })))
        .status,
    ).toBe(202);

    const revoked = await app.request(`/v1/admin/keys/${body.id}`, { method: 'DELETE', headers: admin });
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as { revoked_at: string | null }).revoked_at).not.toBeNull();
    // QUERN_KEY_CACHE_TTL_MS is 200 ms in tests: both the key and its token stop working within it.
    await expect.poll(async () => (await submit()).status, { timeout: 2_000, interval: 50 }).toBe(401);
    const withToken = () =>
      app.request('/v1/jobs', json({ features: CAR }, { authorization: `Bearer ${token.access_token}` }));
    await expect.poll(async () => (await withToken()).status, { timeout: 2_000, interval: 50 }).toBe(401);
    expect(
      (await app.request('/v1/admin/keys/key_0000000000000000000000', { method: 'DELETE', headers: admin })).status,
    ).toBe(404);
  });

  it('the CLI creates, lists and revokes keys in the same store', async () => {
    const { app } = await harness();
    const env = { REDIS_URL: redis.url, QUERN_REDIS_PREFIX: redis.prefix, NODE_ENV: 'test' };
    const out: string[] = [];
    expect(
      await runCli(
        ['keys', 'create', '--name', 'cli-key', '--tier', 'premium', '--scopes', 'predict,jobs:read', '--json'],
        (l) => out.push(l),
        env,
      ),
    ).toBe(0);
    const created = JSON.parse(out[0] as string) as { id: string; key: string; tier: string };
    expect(created.tier).toBe('premium');
    expect((await app.request('/v1/jobs', json({ features: CAR }, { 'x-api-key': created.key }))).status).toBe(202);

    out.length = 0;
    expect(await runCli(['keys', 'list'], (l) => out.push(l), env)).toBe(0);
    const line = out.find((l) => l.startsWith(created.id)) ?? '';
    expect(line).toContain('active');
    expect(line).toContain(created.key.slice(0, 11));
    expect(out.join('\n')).not.toContain(created.key);

    out.length = 0;
    expect(await runCli(['keys', 'revoke', created.id], (l) => out.push(l), env)).toBe(0);
    await expect
      .poll(async () => (await app.request('/v1/jobs', json({ features: CAR }, { 'x-api-key': created.key }))).status, {
        timeout: 2_000,
        interval: 50,
      })
      .toBe(401);
    expect(await runCli(['keys', 'create'], () => undefined, env)).toBe(2);
  });

  it('QUERN_DEV_API_KEY is stored as a premium key with every scope', async () => {
    const dev = 'qk_dev_key_for_this_test_only_0000';
    const { services, app } = await harness({ QUERN_DEV_API_KEY: dev });
    await services.ensureDevKey();
    const record = await services.apiKeys.findByKey(dev);
    expect(record).toMatchObject({ tier: 'premium', scopes: [...SCOPES], name: 'development' });
    expect((await app.request('/v1/admin/keys', { headers: { 'x-api-key': dev } })).status).toBe(200);
  });
});

describe('access tokens', () => {
  it('exchanges a key for a short-lived token, narrowed to fewer scopes on request', async () => {
    const { app } = await harness({ QUERN_JWT_TTL_SECONDS: '600' });
    const res = await app.request(
      '/v1/auth/token',
      json({ scopes: ['jobs:read'], ttl_seconds: 3600 }, { 'x-api-key': TEST_API_KEY }),
    );
    expect(res.status).toBe(200);
    const token = (await res.json()) as { access_token: string; token_type: string; expires_in: number; scope: string };
    expect(token).toMatchObject({ token_type: 'Bearer', expires_in: 600, scope: 'jobs:read' });
    const auth = { authorization: `Bearer ${token.access_token}` };
    expect((await app.request('/v1/jobs/job_0000000000000000000000', { headers: auth })).status).toBe(404);
    expect((await app.request('/v1/jobs', json({ features: CAR }, auth))).status).toBe(403);
    // A token cannot buy another token.
    expect((await app.request('/v1/auth/token', json({}, auth))).status).toBe(403);
  });

  it('refuses scopes the key does not have', async () => {
    const { services, app } = await harness();
    const { key } = await services.apiKeys.create({ name: 'reader', tier: 'free', scopes: ['jobs:read'] });
    const res = await app.request('/v1/auth/token', json({ scopes: ['admin'] }, { 'x-api-key': key }));
    expect(res.status).toBe(403);
  });

  it('accepts tokens of an external identity provider verified against its JWKS', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' };
    const port = await freePort();
    const server = (await new Promise<Server>((resolve) => {
      const s = serve({ fetch: () => Response.json({ keys: [jwk] }), port, hostname: '127.0.0.1' }, () =>
        resolve(s as Server),
      );
    })) as Server;
    try {
      const { app } = await harness({
        QUERN_OIDC_JWKS_URL: `http://127.0.0.1:${port}/jwks`,
        QUERN_OIDC_ISSUER: 'https://idp.example',
        QUERN_OIDC_AUDIENCE: 'quern',
      });
      const sign = (aud: string) =>
        new SignJWT({ scope: 'predict jobs:read', quern_tier: 'premium' })
          .setProtectedHeader({ alg: 'ES256', kid: 'idp-1' })
          .setIssuer('https://idp.example')
          .setAudience(aud)
          .setSubject('user-42')
          .setIssuedAt()
          .setExpirationTime('5m')
          .sign(privateKey);
      const good = { authorization: `Bearer ${await sign('quern')}` };
      const created = await app.request('/v1/jobs', json({ features: CAR }, good));
      expect(created.status).toBe(202);
      const { id } = (await created.json()) as { id: string };
      expect((await app.request(`/v1/jobs/${id}`, { headers: good })).status).toBe(200);
      expect((await app.request('/v1/admin/keys', { headers: good })).status).toBe(403);
      const wrongAudience = { authorization: `Bearer ${await sign('someone-else')}` };
      expect((await app.request('/v1/jobs', json({ features: CAR }, wrongAudience))).status).toBe(401);
    } finally {
      server.close();
    }
  });
});

describe('rate limits', () => {
  it('on the sync routes the budget is checked with the cache read, and still decides first', async () => {
    const { services, app } = await harness(
      { QUERN_RATE_FREE_PER_MINUTE: '2', QUERN_RATE_FREE_PER_HOUR: '100' },
      `${redis.prefix}rls`,
    );
    const { key } = await services.apiKeys.create({ name: 'free-sync', tier: 'free', scopes: ['predict'] });
    const headers = { 'x-api-key': key, prefer: 'respond-async' };
    // Within budget: a bad body is a 422, and carries the rate-limit fields like any limited answer.
    const bad = await app.request('/v1/predict', json({ model: 'cars-mpg', features: [1, 2] }, headers));
    expect(bad.status).toBe(422);
    expect(bad.headers.get('ratelimit')).toMatch(/^"minute";r=1;/);
    const ok = await app.request('/v1/predict', json({ model: 'cars-mpg', features: CAR }, headers));
    expect(ok.status).toBe(202);
    // Over budget: 429 whatever else is wrong with the request, and no job is created.
    const before = await services.jobs.queueOf('cars-mpg').count();
    for (const body of [{ model: 'cars-mpg', features: CAR }, { model: 'cars-mpg', features: [1, 2] }, { nope: 1 }]) {
      const refused = await app.request('/v1/predict', json(body, headers));
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).not.toBeNull();
    }
    const batch = await app.request(
      '/v1/batch-predict',
      json({ model: 'cars-mpg', requests: [{ features: CAR }] }, headers),
    );
    expect(batch.status).toBe(429);
    expect(await services.jobs.queueOf('cars-mpg').count()).toBe(before);
  });

  it('counts requests per principal per tier and answers 429 with Retry-After and the IETF fields', async () => {
    const { services, app } = await harness(
      { QUERN_RATE_FREE_PER_MINUTE: '3', QUERN_RATE_FREE_PER_HOUR: '100' },
      `${redis.prefix}rl`,
    );
    const { key } = await services.apiKeys.create({ name: 'free', tier: 'free', scopes: ['jobs:read'] });
    const get = () => app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': key } });
    const first = await get();
    expect(first.headers.get('ratelimit-policy')).toBe('"minute";q=3;w=60, "hour";q=100;w=3600');
    expect(first.headers.get('ratelimit')).toMatch(/^"minute";r=2;t=\d+, "hour";r=99;t=\d+$/);
    await get();
    const third = await get();
    expect(third.status).toBe(404);
    expect(third.headers.get('ratelimit')).toMatch(/^"minute";r=0;/);
    const refused = await get();
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toBe('application/problem+json');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.headers.get('ratelimit-policy')).toContain('"minute";q=3;w=60');
    expect(((await refused.json()) as { code: string }).code).toBe('rate_limited');
    // Refusals are not charged to the hour: after 20 more refused tries it still shows the 3 served.
    for (let i = 0; i < 20; i++) expect((await get()).status).toBe(429);
    expect((await get()).headers.get('ratelimit')).toMatch(/^"minute";r=0;t=\d+, "hour";r=97;t=\d+$/);
    // Another principal has its own budget.
    const other = await app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': TEST_API_KEY } });
    expect(other.status).toBe(404);
  });

  it('a refusal by the hour budget gives the minute its point back', async () => {
    const { services, app } = await harness(
      { QUERN_RATE_FREE_PER_MINUTE: '5', QUERN_RATE_FREE_PER_HOUR: '3' },
      `${redis.prefix}rlh`,
    );
    const { key } = await services.apiKeys.create({ name: 'free-hour', tier: 'free', scopes: ['jobs:read'] });
    const get = () => app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': key } });
    for (let i = 0; i < 3; i++) expect((await get()).status).toBe(404);
    // The hour is spent, the minute is not: refused, and told to come back when the hour allows.
    const refused = await get();
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { code: string }).code).toBe('rate_limited');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(60);
    expect(refused.headers.get('ratelimit')).toMatch(/^"minute";r=2;t=\d+, "hour";r=0;t=\d+$/);
    // Refused requests are served by no one: 20 more leave the minute at the 3 served, not 5 spent.
    for (let i = 0; i < 20; i++) expect((await get()).status).toBe(429);
    expect((await get()).headers.get('ratelimit')).toMatch(/^"minute";r=2;t=\d+, "hour";r=0;t=\d+$/);
  });

  it('limits failed authentication per client address', async () => {
    const { app } = await harness({ QUERN_AUTH_FAILURES_PER_MINUTE: '3' }, `${redis.prefix}af`);
    const bad = () =>
      app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': 'qk_guess_000000000000000000' } });
    for (let i = 0; i < 3; i++) expect((await bad()).status).toBe(401);
    const blocked = await bad();
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    // A blocked address is not let through with a good key either (the key would be checked).
    const good = await app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': TEST_API_KEY } });
    expect(good.status).toBe(429);
  });

  it('holds the failed-authentication limit against a parallel burst of guesses', async () => {
    const { app } = await harness({ QUERN_AUTH_FAILURES_PER_MINUTE: '5' }, `${redis.prefix}afp`);
    const statuses = await Promise.all(
      Array.from({ length: 120 }, async (_, i) => {
        const guess = `qk_guess_${String(i).padStart(20, '0')}`;
        const res = await app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': guess } });
        return res.status;
      }),
    );
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(115);
  });

  it('does not count good credentials: a cold burst of one key, and checked good keys between failures', async () => {
    // No key cache: every request checks its key in Redis, each under a reservation it gets back.
    const { app } = await harness(
      { QUERN_AUTH_FAILURES_PER_MINUTE: '3', QUERN_KEY_CACHE_TTL_MS: '0' },
      `${redis.prefix}afg`,
    );
    const get = (key: string) => app.request('/v1/jobs/job_0000000000000000000000', { headers: { 'x-api-key': key } });
    const burst = await Promise.all(Array.from({ length: 40 }, () => get(TEST_API_KEY)));
    expect(burst.map((r) => r.status).filter((s) => s !== 404)).toEqual([]);
    expect((await get('qk_guess_000000000000000000')).status).toBe(401);
    expect((await get('qk_guess_000000000000000001')).status).toBe(401);
    for (let i = 0; i < 10; i++) expect((await get(TEST_API_KEY)).status).toBe(404);
    expect((await get('qk_guess_000000000000000002')).status).toBe(401);
    expect((await get('qk_guess_000000000000000003')).status).toBe(429);
  });
});

describe('input limits, headers and logs', () => {
  it('413 for a chunked body over the limit, without Content-Length, over a real socket', async () => {
    const { app } = await harness({ QUERN_BODY_LIMIT_BYTES: '65536' });
    const port = await freePort();
    const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port,
            path: '/v1/jobs',
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, 'transfer-encoding': 'chunked' },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', (err) =>
          err.message.includes('EPIPE') || err.message.includes('ECONNRESET') ? undefined : reject(err),
        );
        req.write('{"features":[');
        for (let i = 0; i < 20; i++) req.write(`${'1,'.repeat(4096)}`);
        req.end('1]}');
      });
      expect(status).toBe(413);
      // The same body with Content-Length is refused too.
      const big = JSON.stringify({ features: Array.from({ length: 40_000 }, () => 1) });
      const res = await fetch(`http://127.0.0.1:${port}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
        body: big,
      });
      expect(res.status).toBe(413);
    } finally {
      server.close();
    }
  });

  it('after a 413 the next request on a kept-alive connection works: the body is drained, or the connection closed', async () => {
    const { app } = await harness({ QUERN_BODY_LIMIT_BYTES: '65536' });
    const port = await freePort();
    const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    /** One request on the shared agent; errors of the socket after the answer are the client's, not the test's. */
    const send = (path: string, method: string, headers: Record<string, string>, body: string[]) =>
      new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path, method, agent, headers }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        });
        req.on('socket', (socket) => {
          sockets.add(socket);
          socket.on('error', () => undefined);
        });
        req.on('error', reject);
        for (const chunk of body) req.write(chunk);
        req.end();
      });
    const health = () => send('/health', 'GET', {}, []);
    const post = (headers: Record<string, string>, body: string[]) =>
      send('/v1/jobs', 'POST', { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...headers }, body);
    const chunked = (kib: number) => [
      '{"features":[',
      ...Array.from({ length: kib / 8 }, () => '1,'.repeat(4096)),
      '1]}',
    ];
    try {
      for (let round = 0; round < 3; round++) {
        // A body a little over the limit is read to its end: 413, and the connection stays usable.
        const over = await post({ 'transfer-encoding': 'chunked' }, chunked(160));
        expect(over).toEqual({ status: 413, connection: 'keep-alive' });
        expect(await health()).toMatchObject({ status: 200 });
      }
      expect(sockets.size).toBe(1);
      // A body far over the limit is not read: 413 with Connection: close, then a new connection.
      const huge = await post({ 'transfer-encoding': 'chunked' }, chunked(16 * 1024)).catch((err: Error) => err);
      // (The client may see its unsent rest refused before it reads the answer.)
      if (huge instanceof Error) expect(huge.message).toMatch(/EPIPE|ECONNRESET/);
      else expect(huge).toEqual({ status: 413, connection: 'close' });
      expect(await health()).toMatchObject({ status: 200 });
      // Content-Length over the limit: answered from the header, the connection still usable.
      const big = JSON.stringify({ features: Array.from({ length: 40_000 }, () => 1) });
      const declared = { 'content-length': String(Buffer.byteLength(big)) };
      expect(await post(declared, [big])).toEqual({ status: 413, connection: 'keep-alive' });
      expect(await health()).toMatchObject({ status: 200 });
      // Declared far over the limit: not read, Connection: close.
      const declaredHuge = await post({ 'content-length': String(64 * 1024 * 1024) }, ['{"features":[']).catch(
        (err: Error) => err,
      );
      if (declaredHuge instanceof Error) expect(declaredHuge.message).toMatch(/EPIPE|ECONNRESET/);
      else expect(declaredHuge).toEqual({ status: 413, connection: 'close' });
      expect(await health()).toMatchObject({ status: 200 });
    } finally {
      agent.destroy();
      server.close();
    }
  });

  it('sets security headers on every response, CORS only for configured origins', async () => {
    const { app } = await harness({ QUERN_CORS_ORIGINS: 'https://app.example' });
    for (const res of [await app.request('/health'), await app.request('/v1/nothing')]) {
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
    }
    const allowed = await app.request('/v1/models', { headers: { origin: 'https://app.example' } });
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(allowed.headers.get('access-control-allow-credentials')).toBeNull();
    // A browser client reads the deprecation of the tutorial's paths too (RFC 9745).
    expect(allowed.headers.get('access-control-expose-headers')?.split(/,\s*/)).toEqual(
      expect.arrayContaining(['Deprecation', 'Link', 'Location']),
    );
    const other = await app.request('/v1/models', { headers: { origin: 'https://evil.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('over a real socket: preset headers on every answer, a route’s own wins, declared headers still validated', async () => {
    // Served by @hono/node-server these headers go onto Node's response and the request's
    // declared headers are read from Node's parsed object (middleware/node-headers.ts).
    const { app } = await harness();
    const port = await freePort();
    const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
    try {
      const base = `http://127.0.0.1:${port}`;
      const auth = { 'x-api-key': TEST_API_KEY, 'x-request-id': 'req-socket-test-0001' };
      const queued = await fetch(`${base}/v1/predict`, {
        ...json({ features: CAR }, { ...auth, prefer: 'respond-async', 'idempotency-key': 'socket-headers-1' }),
      });
      const tooLongKey = await fetch(`${base}/v1/predict`, {
        ...json({ features: CAR }, { ...auth, 'idempotency-key': 'k'.repeat(256) }),
      });
      const badDeadline = await fetch(`${base}/v1/predict`, {
        ...json({ features: CAR }, { ...auth, 'cancel-after': 'soon' }),
      });
      const missing = await fetch(`${base}/v1/nothing`);
      const docs = await fetch(`${base}/docs`);
      expect(queued.status).toBe(202);
      expect(queued.headers.get('x-request-id')).toBe('req-socket-test-0001');
      expect(queued.headers.get('ratelimit-policy')).toMatch(/"minute";q=\d+;w=60/);
      expect(queued.headers.get('preference-applied')).toBe('respond-async');
      expect(tooLongKey.status).toBe(422);
      expect(await tooLongKey.json()).toMatchObject({
        code: 'validation_failed',
        errors: [{ field: 'idempotency-key' }],
      });
      expect(badDeadline.status).toBe(422);
      expect(await badDeadline.json()).toMatchObject({ errors: [{ field: 'cancel-after' }] });
      for (const res of [queued, tooLongKey, badDeadline, missing, docs]) {
        expect(res.headers.get('x-content-type-options')).toBe('nosniff');
        expect(res.headers.get('x-frame-options')).toBe('DENY');
        expect(res.headers.get('x-request-id')).toMatch(/^req[-_]/);
      }
      expect(missing.status).toBe(404);
      expect(missing.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(missing.headers.get('cache-control')).toBe('no-store');
      // The docs page sets its own policy: it replaces the preset one, it is not added to it.
      expect(docs.status).toBe(200);
      expect(docs.headers.get('content-security-policy')).toContain('script-src');
      expect(docs.headers.get('content-security-policy')).not.toContain("default-src 'none'; frame-ancestors 'none'");
    } finally {
      server.close();
    }
  });

  it('never writes a key or a token into the log, also when a request fails', async () => {
    const { app, services, lines } = await harness();
    const token = (
      (await (await app.request('/v1/auth/token', json({}, { 'x-api-key': TEST_API_KEY }))).json()) as {
        access_token: string;
      }
    ).access_token;
    await app.request('/v1/jobs', json({ features: CAR }, { 'x-api-key': TEST_API_KEY }));
    await app.request('/v1/jobs', json({ features: CAR }, { authorization: `Bearer ${token}` }));
    await app.request('/v1/jobs', json({ features: CAR }, { 'x-api-key': 'qk_wrong_key_but_secret_0000000' }));
    // An unexpected failure: the error is logged with its stack, the credentials are not.
    const submit = services.jobs.submit.bind(services.jobs);
    services.jobs.submit = () => Promise.reject(new Error('boom'));
    const failed = await app.request('/v1/jobs', json({ features: CAR }, { authorization: `Bearer ${token}` }));
    services.jobs.submit = submit;
    expect(failed.status).toBe(500);
    expect(JSON.stringify(await failed.json())).not.toContain('boom');

    const log = lines.join('');
    expect(log).toContain('"msg":"request failed"');
    expect(log).toContain('boom');
    expect(log).toContain('"key_prefix":"qk_test_012"');
    expect(log).not.toContain(TEST_API_KEY);
    expect(log).not.toContain(token);
    expect(log).not.toContain(token.split('.')[2] as string);
    expect(log).not.toContain('qk_wrong_key_but_secret_0000000');
  });

  it('redacts credential fields wherever a log call passes them', () => {
    const lines: string[] = [];
    const logger = createLogger('api', 'info', { write: (l: string) => void lines.push(l) });
    logger.info(
      { headers: { authorization: 'Bearer abc.def.ghi', 'x-api-key': 'qk_secret' }, token: 't0k', api_key: 'k' },
      'x',
    );
    expect(lines.join('')).not.toMatch(/abc\.def\.ghi|qk_secret|t0k|"k"/);
  });
});
