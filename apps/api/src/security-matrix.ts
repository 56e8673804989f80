import { TEST_JWT_KEYS } from '@quern/devkit';
import { type JWTPayload, SignJWT } from 'jose';
import type { Scope } from './services/principal';

/**
 * Every protected route, the scope it needs and a request that would otherwise succeed (or at
 * least pass authentication). The security tests run the same cases against each; a test also
 * checks this list against the OpenAPI document, so a new protected route cannot be forgotten.
 */
export interface ProtectedRoute {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** OpenAPI path template, as in the document. */
  template: string;
  /** Concrete path; `jobId` is a job owned by the main test key. */
  path: (ctx: { jobId: string; keyId: string }) => string;
  body?: unknown;
  /** The scope the route declares; null for "any valid credential". */
  scope: Scope | null;
  /** Routes about one job: another owner gets 404. */
  ownsJob?: boolean;
}

const CAR = [4, 140, 90, 2264, 15.5, 1971];
/** An Open Inference Protocol request for one car. */
const OIP_BODY = { inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: CAR }] };

export const PROTECTED_ROUTES: ProtectedRoute[] = [
  { method: 'POST', template: '/v1/jobs', path: () => '/v1/jobs', body: { features: CAR }, scope: 'predict' },
  {
    method: 'GET',
    template: '/v1/jobs/{id}',
    path: ({ jobId }) => `/v1/jobs/${jobId}`,
    scope: 'jobs:read',
    ownsJob: true,
  },
  { method: 'POST', template: '/jobs', path: () => '/jobs', body: { features: CAR }, scope: 'predict' },
  {
    method: 'GET',
    template: '/jobs/{id}',
    path: ({ jobId }) => `/jobs/${jobId}`,
    scope: 'jobs:read',
    ownsJob: true,
  },
  { method: 'POST', template: '/v1/predict', path: () => '/v1/predict', body: { features: CAR }, scope: 'predict' },
  { method: 'POST', template: '/predict', path: () => '/predict', body: { features: CAR }, scope: 'predict' },
  {
    method: 'POST',
    template: '/v1/batch-predict',
    path: () => '/v1/batch-predict',
    body: { requests: [{ features: CAR }] },
    scope: 'predict',
  },
  {
    method: 'POST',
    template: '/batch-predict',
    path: () => '/batch-predict',
    body: { requests: [{ features: CAR }] },
    scope: 'predict',
  },
  { method: 'POST', template: '/v1/auth/token', path: () => '/v1/auth/token', body: {}, scope: null },
  { method: 'GET', template: '/v1/admin/keys', path: () => '/v1/admin/keys', scope: 'admin' },
  {
    method: 'POST',
    template: '/v1/jobs/{id}/retry',
    path: ({ jobId }) => `/v1/jobs/${jobId}/retry`,
    scope: 'predict',
    ownsJob: true,
  },
  { method: 'GET', template: '/v1/jobs', path: () => '/v1/jobs', scope: 'jobs:read' },
  { method: 'GET', template: '/v1/usage', path: () => '/v1/usage', scope: 'jobs:read' },
  {
    method: 'GET',
    template: '/v1/admin/keys/{id}/usage',
    path: ({ keyId }) => `/v1/admin/keys/${keyId}/usage`,
    scope: 'admin',
  },
  {
    method: 'POST',
    template: '/v1/admin/keys',
    path: () => '/v1/admin/keys',
    body: { name: 'matrix', scopes: ['predict'] },
    scope: 'admin',
  },
  { method: 'GET', template: '/v1/admin/keys/{id}', path: ({ keyId }) => `/v1/admin/keys/${keyId}`, scope: 'admin' },
  {
    method: 'PATCH',
    template: '/v1/admin/keys/{id}',
    path: ({ keyId }) => `/v1/admin/keys/${keyId}`,
    body: { weight: 1 },
    scope: 'admin',
  },
  {
    method: 'POST',
    template: '/v1/admin/models/{name}/routing',
    path: () => '/v1/admin/models/cars-mpg/routing',
    body: { weights: {} },
    scope: 'admin',
  },
  // Authenticated, these end in 404 and 422 (an unknown version; the default one): no worker runs here.
  {
    method: 'POST',
    template: '/v1/admin/models/{name}/versions/{version}/load',
    path: () => '/v1/admin/models/cars-mpg/versions/9.9.9/load',
    body: {},
    scope: 'admin',
  },
  {
    method: 'POST',
    template: '/v1/admin/models/{name}/versions/{version}/unload',
    path: () => '/v1/admin/models/cars-mpg/versions/1.0.0/unload',
    scope: 'admin',
  },
  {
    method: 'GET',
    template: '/v1/jobs/{id}/events',
    path: ({ jobId }) => `/v1/jobs/${jobId}/events`,
    scope: 'jobs:read',
    ownsJob: true,
  },
  {
    method: 'GET',
    template: '/jobs/{id}/events',
    path: ({ jobId }) => `/jobs/${jobId}/events`,
    scope: 'jobs:read',
    ownsJob: true,
  },
  { method: 'GET', template: '/v1/webhooks/secret', path: () => '/v1/webhooks/secret', scope: 'predict' },
  {
    method: 'POST',
    template: '/v1/webhooks/secret/rotate',
    path: () => '/v1/webhooks/secret/rotate',
    scope: 'predict',
  },
  {
    method: 'POST',
    template: '/v2/models/{name}/infer',
    path: () => '/v2/models/cars-mpg/infer',
    body: OIP_BODY,
    scope: 'predict',
  },
  {
    method: 'POST',
    template: '/v2/models/{name}/versions/{version}/infer',
    path: () => '/v2/models/cars-mpg/versions/1.0.0/infer',
    body: OIP_BODY,
    scope: 'predict',
  },
  // Last: their control cases cancel jobs.
  {
    method: 'DELETE',
    template: '/v1/jobs/{id}',
    path: ({ jobId }) => `/v1/jobs/${jobId}`,
    scope: 'jobs:cancel',
    ownsJob: true,
  },
  {
    method: 'DELETE',
    template: '/jobs/{id}',
    path: ({ jobId }) => `/jobs/${jobId}`,
    scope: 'jobs:cancel',
    ownsJob: true,
  },
];

const [signing, second] = TEST_JWT_KEYS.split(',').map((entry) => {
  const colon = entry.indexOf(':');
  return { kid: entry.slice(0, colon), secret: new TextEncoder().encode(entry.slice(colon + 1)) };
}) as [{ kid: string; secret: Uint8Array }, { kid: string; secret: Uint8Array }];

export const JWT_TEST_KEYS = { signing, second };

/** Signs a token like the API does, with any claim or header changed, for the bad-token cases. */
export async function mintToken(options: {
  sub: string;
  scope?: string;
  iss?: string;
  aud?: string;
  expiresIn?: number | null;
  kid?: string;
  secret?: Uint8Array;
  extra?: JWTPayload;
}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ scope: options.scope ?? 'predict jobs:read jobs:cancel admin', ...options.extra })
    .setProtectedHeader({ alg: 'HS256', kid: options.kid ?? signing.kid, typ: 'JWT' })
    .setSubject(options.sub)
    .setIssuer(options.iss ?? 'quern')
    .setAudience(options.aud ?? 'quern-api')
    .setIssuedAt(now - 5);
  if (options.expiresIn !== null) jwt = jwt.setExpirationTime(now + (options.expiresIn ?? 600));
  return jwt.sign(options.secret ?? signing.secret);
}

/** An unsigned token (`alg: none`) with valid-looking claims: must always be refused. */
export function unsignedToken(sub: string): string {
  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ sub, iss: 'quern', aud: 'quern-api', iat: now, exp: now + 600, scope: 'predict jobs:read admin' })}.`;
}
