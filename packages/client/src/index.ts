/**
 * `@quern/client`: a typed client of the Quern API for Node 20+ and browsers. Its types are
 * generated from the OpenAPI document the API serves (`pnpm client:generate`); calls go through
 * openapi-fetch.
 */
export { Backoff, type BackoffOptions, parseRetryAfter } from './backoff';
export {
  JobFailedError,
  QuernClient,
  type QuernClientOptions,
  type SyncOptions,
  type WaitOptions,
  WaitTimeoutError,
} from './client';
export type { JobEvent } from './events';
export { isProblem, QuernProblemError } from './problem';
export type { components, operations, paths } from './schema';
export {
  type BatchPredictRequest,
  type BatchPredictResponse,
  type CreateJobRequest,
  FINAL_STATUSES,
  type FinalJobStatus,
  isFinal,
  type Job,
  type JobList,
  type JobListQuery,
  type JobStatus,
  type Model,
  type PredictRequest,
  type PredictResponse,
  type Problem,
  type ProblemCode,
  type TokenRequest,
  type TokenResponse,
  type Usage,
} from './types';
export { verifyWebhook, type WebhookEvent, type WebhookHeaders } from './webhook';
