/**
 * Stable error codes. Clients switch on `code`, never on `detail`, so codes are part of the API
 * and must not change meaning. Each code has exactly one HTTP status.
 */
export const ErrorCodes = {
  malformed_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  job_not_found: 404,
  model_not_found: 404,
  job_finished: 409,
  job_already_started: 409,
  job_canceled: 409,
  job_not_retryable: 409,
  job_expired: 504,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_failed: 422,
  idempotency_key_reused: 422,
  rate_limited: 429,
  concurrency_limited: 429,
  internal_error: 500,
  inference_failed: 500,
  redis_unavailable: 503,
  queue_full: 503,
  service_unavailable: 503,
} as const;
export type ErrorCode = keyof typeof ErrorCodes;

export interface FieldError {
  field: string;
  message: string;
}

/**
 * The one error type the API turns into problem+json. Domain code throws it with a code;
 * the status comes from the code, so the two cannot disagree.
 */
export class QuernError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly errors: FieldError[] | undefined;
  readonly headers: Record<string, string> | undefined;
  readonly extra: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    detail: string,
    options: {
      errors?: FieldError[];
      headers?: Record<string, string>;
      extra?: Record<string, unknown>;
      cause?: unknown;
    } = {},
  ) {
    super(detail, { cause: options.cause });
    this.name = 'QuernError';
    this.code = code;
    this.status = ErrorCodes[code];
    this.errors = options.errors;
    this.headers = options.headers;
    this.extra = options.extra;
  }
}

/**
 * Errors a worker records on a failed job, as `code: message` in BullMQ's failedReason, so the
 * API can map a failure back to a status without parsing free text.
 */
export const JobErrorCodes = [
  'invalid_input',
  'model_unavailable',
  'inference_failed',
  'deadline_exceeded',
  'canceled',
  /** BullMQ failed the job: the workers holding it stopped more often than the stall limit allows. */
  'worker_lost',
  'internal_error',
] as const;
export type JobErrorCode = (typeof JobErrorCodes)[number];
