/**
 * Stable error codes. Clients switch on `code`, never on `detail`, so codes are part of the API
 * and must not change meaning. Each code has exactly one HTTP status.
 */
export const ErrorCodes = {
  malformed_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  job_not_found: 404,
  model_not_found: 404,
  job_finished: 409,
  job_already_started: 409,
  job_canceled: 409,
  job_expired: 504,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_failed: 422,
  idempotency_key_reused: 422,
  rate_limited: 429,
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

/** The reason BullMQ records when a job stalled more often than `maxStalledCount` allows. */
const STALL_LIMIT_REASON = 'job stalled more than allowable limit';
export type JobErrorCode = (typeof JobErrorCodes)[number];

/**
 * The message of a job failed because the model's output for one of its rows is not finite. A
 * coalesced job carries several callers' rows; the API reads the row back (`overflowRowOf`) to
 * answer only that caller.
 */
export function overflowMessage(row: number): string {
  return `the model's output for row ${row} is not a finite number: its input is outside what the model can compute`;
}

export function overflowRowOf(code: string, message: string): number | undefined {
  const match = /^the model's output for row (\d+) is not a finite number/.exec(message);
  return code === 'invalid_input' && match ? Number(match[1]) : undefined;
}

export function encodeJobError(code: JobErrorCode, message: string): string {
  return `${code}: ${message}`;
}

export function decodeJobError(reason: string | undefined): { code: JobErrorCode; message: string } {
  const match = /^([a-z_]+): ([\s\S]*)$/.exec(reason ?? '');
  const code = match?.[1] as JobErrorCode | undefined;
  if (match && code && (JobErrorCodes as readonly string[]).includes(code)) {
    return { code, message: match[2] ?? '' };
  }
  if (reason === STALL_LIMIT_REASON) {
    return {
      code: 'worker_lost',
      message: 'the workers running this job stopped (crashed or were killed) more often than allowed; submit it again',
    };
  }
  // Anything else is an unexpected error text (a stack, a driver message): never shown to clients.
  return { code: 'internal_error', message: 'the job failed because of an internal error' };
}
