import { parseRetryAfter } from './backoff';
import type { Problem, ProblemCode } from './types';

/**
 * An error answer of the API. `problem` is its RFC 9457 body (with the stable `code` to switch
 * on); it is undefined when something in between (a proxy, a load balancer) answered with
 * another body, in which case only `status` is known.
 */
export class QuernProblemError extends Error {
  override readonly name = 'QuernProblemError';
  readonly status: number;
  readonly problem: Problem | undefined;
  /** Seconds the server asked to wait before retrying (`Retry-After`), when it said. */
  readonly retryAfterSeconds: number | undefined;

  constructor(response: Response, body: unknown) {
    const problem = isProblemBody(body) ? body : undefined;
    super(
      problem
        ? `${problem.status} ${problem.code}: ${problem.detail}${problem.request_id ? ` (request ${problem.request_id})` : ''}`
        : `HTTP ${response.status} ${response.statusText}`.trim(),
    );
    this.status = response.status;
    this.problem = problem;
    this.retryAfterSeconds = parseRetryAfter(response.headers.get('retry-after'));
  }

  /** The stable error code, e.g. `validation_failed`; undefined for a body that is not a problem. */
  get code(): ProblemCode | undefined {
    return this.problem?.code;
  }

  /** The request id to quote when reporting the error. */
  get requestId(): string | undefined {
    return this.problem?.request_id ?? undefined;
  }
}

/** True when `err` is an error answer of the API, with the given code when one is named. */
export function isProblem(err: unknown, code?: ProblemCode): err is QuernProblemError {
  return err instanceof QuernProblemError && (code === undefined || err.code === code);
}

function isProblemBody(body: unknown): body is Problem {
  if (typeof body !== 'object' || body === null) return false;
  const b = body as Record<string, unknown>;
  return typeof b.code === 'string' && typeof b.status === 'number' && typeof b.detail === 'string';
}
