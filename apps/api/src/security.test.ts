import { randomBytes } from 'node:crypto';
import { OTHER_API_KEY, seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { JWT_TEST_KEYS, mintToken, PROTECTED_ROUTES, type ProtectedRoute, unsignedToken } from './security-matrix';
import { SCOPES, type Scope } from './services/principal';
import { createServices, type Services } from './services/services';

let redis: TestRedis;
let services: Services;
let app: ReturnType<typeof createApp>;
let jobId: string;
let keyId: string;
let revokedKey: string;
const keysWithout = new Map<Scope, string>();

async function call(route: ProtectedRoute, headers: Record<string, string>, job = jobId) {
  const res = await app.request(route.path({ jobId: job, keyId }), {
    method: route.method,
    headers: { 'content-type': 'application/json', prefer: 'respond-async', ...headers },
    body: route.body === undefined ? undefined : JSON.stringify(route.body),
  });
  // An event stream of a queued job stays open: the status is all these cases need.
  if (res.headers.get('content-type')?.startsWith('text/event-stream')) await res.body?.cancel();
  return res;
}

/** A queued job of the main test key. */
async function queuedJob(): Promise<string> {
  const created = await app.request('/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
    body: JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] }),
  });
  expect(created.status).toBe(202);
  return ((await created.json()) as { id: string }).id;
}

/**
 * What each route answers a valid credential (the requests ask `Prefer: respond-async`, and no
 * worker runs): the exact status, so a 500 cannot pass for "authenticated".
 */
const CONTROL_STATUS: Record<string, number> = {
  'POST /v1/jobs': 202,
  'GET /v1/jobs/{id}': 200,
  'POST /v1/predict': 202,
  'POST /predict': 202,
  'POST /v1/batch-predict': 202,
  'POST /batch-predict': 202,
  'POST /v1/auth/token': 200,
  'GET /v1/admin/keys': 200,
  'POST /v1/admin/keys': 201,
  'GET /v1/admin/keys/{id}': 200,
  'PATCH /v1/admin/keys/{id}': 200,
  // The matrix's job is queued: it cannot be retried yet.
  'POST /v1/jobs/{id}/retry': 409,
  'GET /v1/jobs': 200,
  'GET /v1/usage': 200,
  'GET /v1/admin/keys/{id}/usage': 200,
  'POST /v1/admin/models/{name}/routing': 200,
  'POST /v1/admin/models/{name}/versions/{version}/load': 404,
  'POST /v1/admin/models/{name}/versions/{version}/unload': 422,
  'GET /v1/jobs/{id}/events': 200,
  'GET /v1/webhooks/secret': 200,
  'POST /v1/webhooks/secret/rotate': 200,
  'DELETE /v1/jobs/{id}': 200,
  'POST /jobs': 202,
  'GET /jobs/{id}': 200,
  'GET /jobs/{id}/events': 200,
  'DELETE /jobs/{id}': 200,
  'POST /v2/models/{name}/infer': 202,
  'POST /v2/models/{name}/versions/{version}/infer': 202,
};

beforeAll(async () => {
  redis = await startTestRedis();
  const config = testConfig(redis);
  const logger = createLogger('api', 'silent');
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  app = createApp(services, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  keyId = (await services.apiKeys.findByKey(TEST_API_KEY))?.id as string;
  jobId = await queuedJob();
  const revoked = await services.apiKeys.create({ name: 'revoked', tier: 'premium', scopes: [...SCOPES] });
  await services.apiKeys.revoke(revoked.record.id);
  revokedKey = revoked.key;
  for (const scope of SCOPES) {
    const { key } = await services.apiKeys.create({
      name: `without-${scope}`,
      tier: 'premium',
      scopes: SCOPES.filter((s) => s !== scope),
    });
    keysWithout.set(scope, key);
  }
});

afterAll(async () => {
  await services.close();
  await redis.close();
});

async function expect401(res: Response, presented = true) {
  expect(res.status).toBe(401);
  expect(res.headers.get('content-type')).toBe('application/problem+json');
  expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="quern"/);
  // RFC 6750: a credential that was presented and refused is invalid_token; none, no error code.
  if (presented) expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"');
  else expect(res.headers.get('www-authenticate')).not.toContain('error=');
  expect(((await res.json()) as { code: string }).code).toBe('unauthorized');
}

describe('the security matrix covers every protected route', () => {
  it('lists exactly the operations the OpenAPI document marks as secured', async () => {
    const doc = (await (await app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    const secured = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops)
        .filter(([, op]) => (op.security ?? []).length > 0)
        .map(([method]) => `${method.toUpperCase()} ${path}`),
    );
    const covered = [
      ...PROTECTED_ROUTES.map((r) => `${r.method} ${r.template}`),
      // Revoking in the matrix would break the other cases; it has tests of its own below.
      'DELETE /v1/admin/keys/{id}',
    ];
    expect(secured.sort()).toEqual(covered.sort());
  });
});

describe.each(PROTECTED_ROUTES)('$method $template', (route) => {
  it('401 with WWW-Authenticate without a credential', async () => {
    await expect401(await call(route, {}), false);
  });
  it('401 for an unknown key', async () => {
    await expect401(await call(route, { 'x-api-key': `qk_${randomBytes(24).toString('hex')}` }));
  });
  it('401 for a revoked key', async () => {
    await expect401(await call(route, { 'x-api-key': revokedKey }));
  });
  it('401 for an expired token', async () => {
    await expect401(await call(route, { authorization: `Bearer ${await mintToken({ sub: keyId, expiresIn: -60 })}` }));
  });
  it('401 for a token with alg none', async () => {
    await expect401(await call(route, { authorization: `Bearer ${unsignedToken(keyId)}` }));
  });
  it('401 for a token signed with the wrong key', async () => {
    const token = await mintToken({ sub: keyId, secret: randomBytes(32) });
    await expect401(await call(route, { authorization: `Bearer ${token}` }));
  });
  it('401 for a token with the wrong audience', async () => {
    await expect401(
      await call(route, { authorization: `Bearer ${await mintToken({ sub: keyId, aud: 'other-api' })}` }),
    );
  });
  it('401 for a token with the wrong issuer', async () => {
    await expect401(await call(route, { authorization: `Bearer ${await mintToken({ sub: keyId, iss: 'evil' })}` }));
  });
  it('401 for a token without exp', async () => {
    await expect401(await call(route, { authorization: `Bearer ${await mintToken({ sub: keyId, expiresIn: null })}` }));
  });
  if (route.scope !== null) {
    const scope = route.scope;
    it(`403 for a key without the ${scope} scope`, async () => {
      const res = await call(route, { 'x-api-key': keysWithout.get(scope) as string });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { code: string }).code).toBe('forbidden');
    });
  }
  if (route.ownsJob) {
    it('404 for another owner’s job, exactly like a missing job', async () => {
      const other = await call(route, { 'x-api-key': OTHER_API_KEY });
      const missing = await app.request(route.path({ jobId: 'job_0000000000000000000000', keyId }), {
        method: route.method,
        headers: { 'x-api-key': OTHER_API_KEY },
      });
      // The other owner's attempt changed nothing: the owner still sees the job queued.
      const own = await app.request(`/v1/jobs/${jobId}`, { headers: { 'x-api-key': TEST_API_KEY } });
      expect(((await own.json()) as { status: string }).status).toBe('queued');
      expect(other.status).toBe(404);
      expect(missing.status).toBe(404);
      const [a, b] = (await Promise.all([other.json(), missing.json()])) as { code: string; detail: string }[];
      expect(a?.code).toBe(b?.code);
      expect(a?.detail).toBe(b?.detail);
    });
  }
  it('passes authentication with a valid key and with a valid token (control)', async () => {
    const controls: Record<string, string>[] = [
      { 'x-api-key': TEST_API_KEY },
      { authorization: `Bearer ${await mintToken({ sub: keyId })}` },
      {
        authorization: `Bearer ${await mintToken({ sub: keyId, kid: JWT_TEST_KEYS.second.kid, secret: JWT_TEST_KEYS.second.secret })}`,
      },
    ];
    const expected = CONTROL_STATUS[`${route.method} ${route.template}`];
    expect(expected, 'CONTROL_STATUS lists every route').toBeDefined();
    for (const headers of controls) {
      // A cancel consumes its job: each control cancels a queued job of its own.
      const res = await call(route, headers, route.method === 'DELETE' ? await queuedJob() : jobId);
      // (An event stream's body is closed unread by `call`.)
      const answer = res.bodyUsed ? '' : await res.text();
      // The token exchange takes API keys only: a token there is refused by design.
      if (route.template === '/v1/auth/token' && 'authorization' in headers) {
        expect(res.status, answer).toBe(403);
        expect((JSON.parse(answer) as { code: string }).code).toBe('forbidden');
      } else {
        expect(res.status, answer).toBe(expected);
      }
    }
  });
});
