import createClient, { type Client } from 'openapi-fetch';
import { Backoff, type BackoffOptions, sleep } from './backoff';
import { type JobEvent, jobEvents } from './events';
import { QuernProblemError } from './problem';
import type { paths } from './schema';
import {
  type BatchPredictRequest,
  type BatchPredictResponse,
  type CreateJobRequest,
  isFinal,
  type Job,
  type JobList,
  type JobListQuery,
  type Model,
  type PredictRequest,
  type PredictResponse,
  type TokenRequest,
  type TokenResponse,
  type Usage,
} from './types';

export interface QuernClientOptions {
  /** Where the API is, e.g. `http://127.0.0.1:8000` (paths such as `/v1/predict` are added to it). */
  baseUrl: string;
  /** An API key, sent as `X-API-Key`. */
  apiKey?: string;
  /**
   * An access token from `POST /v1/auth/token` (or an API key), sent as `Authorization: Bearer`;
   * or a function that gives the current one before each request (to renew short-lived tokens).
   */
  token?: string | (() => string | Promise<string>);
  /** Headers sent with every request. */
  headers?: Record<string, string>;
  /** The `fetch` to use (default: the global one). */
  fetch?: (request: Request) => Promise<Response>;
}

export interface WaitOptions extends BackoffOptions {
  /** Give up (with a `WaitTimeoutError`) after this long; by default wait as long as the job takes. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface SyncOptions {
  /** How long the server may hold the request, in seconds (`Prefer: wait=N`; server default 30). */
  waitSeconds?: number;
  /** `Idempotency-Key`: a retry with the same key and body gets the same job. */
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** How to poll when the server's wait runs out and it answers with the job instead (`202`). */
  follow?: WaitOptions;
}

/** `wait()` ran past its `timeoutMs`; `job` is the last state seen, if any. */
export class WaitTimeoutError extends Error {
  override readonly name = 'WaitTimeoutError';
  constructor(
    readonly jobId: string,
    readonly job: Job | undefined,
  ) {
    super(`job ${jobId} was not finished in time (last seen ${job?.status ?? 'never'})`);
  }
}

/**
 * A job that `predict()` or `batchPredict()` followed ended without an answer: it failed, was
 * canceled or expired. `job.error` says why when it failed.
 */
export class JobFailedError extends Error {
  override readonly name = 'JobFailedError';
  constructor(readonly job: Job) {
    super(`job ${job.id} ended ${job.status}${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}`);
  }
}

/** The statuses worth asking again for: the server is busy or limiting, and says when to come back. */
const RETRYABLE = new Set([429, 503]);

/**
 * A typed client of the Quern API for Node 20+ and browsers (fetch only). Every method throws a
 * `QuernProblemError` for an error answer; `api` is the underlying openapi-fetch client, typed
 * from the served OpenAPI document, for any operation without a method here.
 */
export class QuernClient {
  readonly api: Client<paths>;

  constructor(options: QuernClientOptions) {
    const headers: Record<string, string> = { ...options.headers };
    if (options.apiKey) headers['x-api-key'] = options.apiKey;
    const { token } = options;
    if (typeof token === 'string') headers.authorization = `Bearer ${token}`;
    this.api = createClient<paths>({
      baseUrl: options.baseUrl.replace(/\/+$/, ''),
      headers,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    if (typeof token === 'function') {
      this.api.use({
        async onRequest({ request }) {
          request.headers.set('authorization', `Bearer ${await token()}`);
          return request;
        },
      });
    }
  }

  /**
   * One row through `POST /v1/predict`. When the server's wait runs out it answers with the job
   * (`202`); the client then polls that job (`follow`) and answers from its output, so the caller
   * always gets a prediction or an error. Then `latency_ms` is the time the client waited.
   */
  async predict(body: PredictRequest, options: SyncOptions = {}): Promise<PredictResponse> {
    const started = performance.now();
    const { data, error, response } = await this.api.POST('/v1/predict', {
      body,
      params: { header: syncHeaders(options) },
      signal: options.signal,
    });
    if (error !== undefined || !response.ok) throw new QuernProblemError(response, error);
    if (response.status !== 202) return data as PredictResponse;
    const row = Number(response.headers.get('quern-job-row') ?? 0);
    const job = await this.waitForSuccess((data as Job).id, options);
    const prediction = predictionsOf(job)?.[row];
    if (prediction === undefined) throw new JobFailedError(job);
    return {
      prediction,
      latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
      cached: job.timings?.batch_size === 0,
      model_version: job.model_version,
      job_id: job.id,
      job_row: row,
    };
  }

  /**
   * Up to 100 rows in one job through `POST /v1/batch-predict`; a `202` is followed as in
   * `predict()` (then `total_latency_ms` is the time the client waited).
   */
  async batchPredict(body: BatchPredictRequest, options: SyncOptions = {}): Promise<BatchPredictResponse> {
    const started = performance.now();
    const { data, error, response } = await this.api.POST('/v1/batch-predict', {
      body,
      params: { header: syncHeaders(options) },
      signal: options.signal,
    });
    if (error !== undefined || !response.ok) throw new QuernProblemError(response, error);
    if (response.status !== 202) return data as BatchPredictResponse;
    const job = await this.waitForSuccess((data as Job).id, options);
    const predictions = predictionsOf(job);
    if (!predictions) throw new JobFailedError(job);
    return {
      predictions,
      total_latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
      cached: job.timings?.batch_size === 0,
      model_version: job.model_version,
      job_id: job.id,
    };
  }

  /** Queues a job (`POST /v1/jobs`) and answers at once with it; `wait()`, `events()` or a webhook give the result. */
  async submit(body: CreateJobRequest, options: { idempotencyKey?: string; signal?: AbortSignal } = {}): Promise<Job> {
    const { data, error, response } = await this.api.POST('/v1/jobs', {
      body,
      params: { header: options.idempotencyKey ? { 'idempotency-key': options.idempotencyKey } : {} },
      signal: options.signal,
    });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /** The job now (`GET /v1/jobs/{id}`). */
  async getJob(id: string, options: { signal?: AbortSignal } = {}): Promise<Job> {
    const { data, error, response } = await this.api.GET('/v1/jobs/{id}', {
      params: { path: { id } },
      signal: options.signal,
    });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /**
   * Cancels a job (`DELETE /v1/jobs/{id}`): the job as it is after the request; `409` (its batch
   * already started, or it finished) is a `QuernProblemError`.
   */
  async cancel(id: string, options: { signal?: AbortSignal } = {}): Promise<Job> {
    const { data, error, response } = await this.api.DELETE('/v1/jobs/{id}', {
      params: { path: { id } },
      signal: options.signal,
    });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /**
   * Runs a `failed`, `expired` or `canceled` job again under the same id (`POST /v1/jobs/{id}/retry`),
   * with the same input, webhook and deadline length: the job, queued again. A job in another
   * state is a `409 job_not_retryable`; caps refuse as for a new job (`503`, `429`).
   */
  async retry(id: string, options: { signal?: AbortSignal } = {}): Promise<Job> {
    const { data, error, response } = await this.api.POST('/v1/jobs/{id}/retry', {
      params: { path: { id } },
      signal: options.signal,
    });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /**
   * One page of this principal's recent jobs, newest first (`GET /v1/jobs`), optionally of one
   * status; pass the page's `next_cursor` as `cursor` for the next. `jobs()` follows the pages.
   */
  async listJobs(query: JobListQuery = {}, options: { signal?: AbortSignal } = {}): Promise<JobList> {
    const { data, error, response } = await this.api.GET('/v1/jobs', {
      params: { query },
      signal: options.signal,
    });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /** Every recent job of this principal (of one status, if given), newest first, page after page. */
  async *jobs(query: Omit<JobListQuery, 'cursor'> = {}, options: { signal?: AbortSignal } = {}): AsyncGenerator<Job> {
    let cursor: string | undefined;
    do {
      const page = await this.listJobs({ ...query, ...(cursor ? { cursor } : {}) }, options);
      yield* page.data;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  /** This principal's usage per hour, the current hour included (`GET /v1/usage`; 24 hours by default). */
  async usage(query: { hours?: number } = {}, options: { signal?: AbortSignal } = {}): Promise<Usage> {
    const { data, error, response } = await this.api.GET('/v1/usage', { params: { query }, signal: options.signal });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /**
   * Polls a job until it is final (`succeeded`, `failed`, `canceled` or `expired`) and returns it
   * in that state; a failed job is a result here, not an exception. The delay between polls grows
   * (`initialDelayMs`, `factor`, `maxDelayMs`, with jitter); an answer with `Retry-After` (a
   * `429` rate limit or a `503`) is retried no sooner than it asks. Other error answers throw.
   */
  async wait(job: string | Pick<Job, 'id'>, options: WaitOptions = {}): Promise<Job> {
    const id = typeof job === 'string' ? job : job.id;
    const deadline = options.timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.timeoutMs;
    const backoff = new Backoff(options);
    for (;;) {
      const { data, error, response } = await this.api.GET('/v1/jobs/{id}', {
        params: { path: { id } },
        signal: options.signal,
      });
      let retryAfter: number | undefined;
      if (error !== undefined || !data) {
        const problem = new QuernProblemError(response, error);
        if (!RETRYABLE.has(response.status)) throw problem;
        retryAfter = problem.retryAfterSeconds;
        if (Date.now() + (retryAfter ?? 0) * 1000 >= deadline) throw problem;
      } else {
        if (isFinal(data.status)) return data;
      }
      const delay = backoff.delay(retryAfter);
      if (Date.now() + delay >= deadline) {
        // One last look at the deadline itself, so a job that finishes just in time is not missed.
        await sleep(Math.max(0, deadline - Date.now()), options.signal);
        const final = await this.getJob(id, { signal: options.signal });
        if (isFinal(final.status)) return final;
        throw new WaitTimeoutError(id, final);
      }
      await sleep(delay, options.signal);
    }
  }

  /**
   * The job's state changes as they happen (`GET /v1/jobs/{id}/events`, server-sent events):
   * `queued`, `running`, then the final state, each with the job; the iteration ends after the
   * final one. A stream that closes early (an API process stopping) is reopened, up to
   * `reconnects` times in a row; a state already given is not given twice.
   */
  events(id: string, options: { signal?: AbortSignal; reconnects?: number } = {}): AsyncGenerator<JobEvent> {
    return jobEvents(this.api, id, options);
  }

  /**
   * A short-lived access token for this client's credential (`POST /v1/auth/token`), optionally
   * narrowed to fewer scopes or a shorter life: what a browser page should hold instead of a key.
   */
  async accessToken(request: TokenRequest = {}, options: { signal?: AbortSignal } = {}): Promise<TokenResponse> {
    const { data, error, response } = await this.api.POST('/v1/auth/token', { body: request, signal: options.signal });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data;
  }

  /** The models served (`GET /v1/models`). */
  async models(options: { signal?: AbortSignal } = {}): Promise<Model[]> {
    const { data, error, response } = await this.api.GET('/v1/models', { signal: options.signal });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data.data;
  }

  /** The secret that signs this principal's webhook deliveries (`GET /v1/webhooks/secret`), for `verifyWebhook`. */
  async webhookSecret(options: { signal?: AbortSignal } = {}): Promise<string> {
    const { data, error, response } = await this.api.GET('/v1/webhooks/secret', { signal: options.signal });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    return data.secret;
  }

  private async waitForSuccess(id: string, options: SyncOptions): Promise<Job> {
    const job = await this.wait(id, { signal: options.signal, ...options.follow });
    if (job.status !== 'succeeded') throw new JobFailedError(job);
    return job;
  }
}

/** A finished job's predictions, one per row (a job of one row has `prediction`, of several `predictions`). */
function predictionsOf(job: Job): PredictResponse['prediction'][] | undefined {
  const output = job.output;
  if (output && 'predictions' in output) return output.predictions;
  if (output && 'prediction' in output) return [output.prediction];
  return undefined;
}

function syncHeaders(options: SyncOptions): { prefer?: string; 'idempotency-key'?: string } {
  return {
    ...(options.waitSeconds !== undefined ? { prefer: `wait=${options.waitSeconds}` } : {}),
    ...(options.idempotencyKey ? { 'idempotency-key': options.idempotencyKey } : {}),
  };
}
