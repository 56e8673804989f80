import { type ErrorCode, type FieldError, QuernError } from '@quern/shared';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ZodError } from 'zod';
import type { AppEnv } from './env';

/** The `title` of each code's problem+json (also listed in docs/api.md). */
export const PROBLEM_TITLES: Record<ErrorCode, string> = {
  malformed_request: 'Malformed request',
  unauthorized: 'Authentication required',
  forbidden: 'Forbidden',
  not_found: 'Not found',
  method_not_allowed: 'Method not allowed',
  job_not_found: 'Job not found',
  model_not_found: 'Model not found',
  job_finished: 'Job already finished',
  job_already_started: 'Job already started',
  job_canceled: 'Job canceled',
  job_not_retryable: 'Job cannot be retried',
  job_expired: 'Job expired',
  payload_too_large: 'Payload too large',
  unsupported_media_type: 'Unsupported media type',
  validation_failed: 'Validation failed',
  idempotency_key_reused: 'Idempotency key reused with a different request',
  rate_limited: 'Too many requests',
  concurrency_limited: 'Too many rows queued or running for this key',
  internal_error: 'Internal error',
  inference_failed: 'Inference failed',
  redis_unavailable: 'Service temporarily unavailable',
  queue_full: 'Queue full',
  service_unavailable: 'Service unavailable',
};

/** The `type` URI of a problem: stable per code (RFC 9457 §3.1.1), not meant to be dereferenced. */
export const problemType = (code: ErrorCode): string => `urn:quern:problem:${code}`;

/** The Open Inference Protocol's routes (`/v2`, KServe / Triton REST). */
export const isOipPath = (path: string): boolean => path === '/v2' || path.startsWith('/v2/');

/**
 * Renders an error as RFC 9457 problem+json with the stable code and the request id. Under
 * `/v2` it also carries the Open Inference Protocol's `error` member (the field tritonclient and
 * KServe clients read), and an input the model cannot take is OIP's 400, not `/v1`'s 422.
 */
export function problem(c: Context<AppEnv>, err: QuernError): Response {
  const oip = isOipPath(c.req.path);
  const status = oip && err.status === 422 ? 400 : err.status;
  const body: Record<string, unknown> = {
    ...(oip ? { error: err.message } : {}),
    type: problemType(err.code),
    title: PROBLEM_TITLES[err.code],
    status,
    detail: err.message,
    code: err.code,
    request_id: c.get('requestId') ?? null,
    ...(err.errors ? { errors: err.errors } : {}),
    ...(err.extra ?? {}),
  };
  // c.body keeps headers already set on the context (request id, rate-limit fields).
  return c.body(JSON.stringify(body), status as 400, {
    ...(err.headers ?? {}),
    'content-type': 'application/problem+json',
  });
}

/** `features[3]`, `requests[0].features`: the field a client has to fix, in the body's own terms. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out || '(body)';
}

export function validationError(error: ZodError, where: 'json' | 'query' | 'param' | 'header' | string): QuernError {
  const errors: FieldError[] = error.issues.slice(0, 20).map((issue) => ({
    field: fieldPath(issue.path),
    message: issue.message,
  }));
  const first = errors[0];
  const detail = first
    ? `${where === 'json' ? '' : `${where} `}${first.field}: ${first.message}`
    : 'the request does not match the schema';
  return new QuernError('validation_failed', detail, { errors });
}

/** Driver and server errors that mean "Redis can't take this now": answered 503, not 500. */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'MaxRetriesPerRequestError') return true;
  // A slot on the move (a Cluster failover or reshard) that a retry did not get past is an outage too,
  // and so are redirections that went back and forth until ioredis gave up (nodes still disagreeing
  // about the slot's new master).
  if (
    /^(MOVED|ASK) \d+ /.test(err.message) ||
    err.message.startsWith('Too many Cluster redirections') ||
    // ioredis refuses a pipeline whose keys its slot map, mid-change, places on different nodes.
    err.message.startsWith('All keys in the pipeline should belong to the same slots allocation group')
  )
    return true;
  return /Redis connection is not ready|EXECABORT|Stream isn't writeable|Connection is closed|Command timed out|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|OOM command not allowed|LOADING|READONLY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|NOSCRIPT|Connection in subscriber mode|connect ETIMEDOUT/i.test(
    err.message,
  );
}

/** Turns anything thrown in a handler into problem+json; unknown errors never show their text. */
export function toQuernError(err: unknown, redisReady = true): QuernError {
  if (err instanceof QuernError) return err;
  if (err instanceof HTTPException) {
    switch (err.status) {
      case 400:
        return new QuernError('malformed_request', err.message || 'the request body is not valid JSON');
      case 401:
        return new QuernError('unauthorized', 'authentication required');
      case 404:
        return new QuernError('not_found', 'no such resource');
      case 413:
        return new QuernError('payload_too_large', 'the request body is too large');
      case 415:
        return new QuernError('unsupported_media_type', 'send the body as application/json');
      default:
        if (err.status < 500) return new QuernError('malformed_request', 'the request could not be processed');
        return new QuernError('internal_error', 'an internal error occurred');
    }
  }
  if (isRedisUnavailable(err) || !redisReady) {
    return new QuernError('redis_unavailable', 'the job store cannot take requests right now; retry shortly', {
      headers: { 'retry-after': '5' },
    });
  }
  return new QuernError('internal_error', 'an internal error occurred; quote the request id when reporting it');
}
