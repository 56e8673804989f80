import type { components, operations } from './schema';

type Schemas = components['schemas'];

/** The job resource (`GET /v1/jobs/{id}`), as the API serves it. */
export type Job = Schemas['Job'];
export type JobStatus = Schemas['JobStatus'];
/** The statuses a job never leaves. */
export type FinalJobStatus = Extract<JobStatus, 'succeeded' | 'failed' | 'canceled' | 'expired'>;
export type CreateJobRequest = Schemas['CreateJobRequest'];
export type PredictRequest = Schemas['PredictRequest'];
export type PredictResponse = Schemas['PredictResponse'];
export type BatchPredictRequest = Schemas['BatchPredictRequest'];
export type BatchPredictResponse = Schemas['BatchPredictResponse'];
export type Model = Schemas['Model'];
/** A page of `GET /v1/jobs`. */
export type JobList = Schemas['JobList'];
/** What `GET /v1/jobs` filters and pages by. */
export type JobListQuery = NonNullable<operations['listJobs']['parameters']['query']>;
/** A principal's usage per hour (`GET /v1/usage`). */
export type Usage = Schemas['Usage'];
export type TokenRequest = Schemas['TokenRequest'];
export type TokenResponse = Schemas['TokenResponse'];
/** RFC 9457 problem details, as every error answer carries them. */
export type Problem = Schemas['Problem'];
/** The stable error codes of the API (`docs/api.md` lists what each means). */
export type ProblemCode = Problem['code'];

export const FINAL_STATUSES: readonly FinalJobStatus[] = ['succeeded', 'failed', 'canceled', 'expired'];

export function isFinal(status: JobStatus): status is FinalJobStatus {
  return (FINAL_STATUSES as readonly JobStatus[]).includes(status);
}
