import { type InferenceResult, type ModelEntry, newId, QuernError, type SubmitMode } from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';
import type { JobView } from '../services/job-service';
import { syncWaitMs } from './inference-input';

export type SyncOutcome =
  | { kind: 'completed'; jobId: string; result: InferenceResult }
  /** The wait ran out: the job goes on; the caller answers 202 with it. */
  | { kind: 'pending'; jobId: string; view: JobView; waitedMs: number };

/**
 * Enqueues a job and waits for it, for `/v1/predict` and `/v1/batch-predict`. The waiter is
 * registered before the job is added, so a result that comes back at once is not missed.
 * Failures become problems carrying the job id.
 */
export async function runSyncJob(
  c: Context<AppEnv>,
  model: ModelEntry,
  rows: number[][],
  mode: SubmitMode,
): Promise<SyncOutcome> {
  const { config, jobs, waiter, metrics } = c.get('services');
  const principal = c.get('principal');
  const waitMs = syncWaitMs(c.req.header('prefer'), config.QUERN_SYNC_WAIT_DEFAULT_MS, config.QUERN_SYNC_WAIT_MAX_MS);
  const jobId = newId('job');
  const handle = waiter.register(jobId, model.name);
  try {
    await jobs.submit({ model, rows, mode, owner: principal.id, requestId: c.get('requestId'), jobId });
  } catch (err) {
    handle.cancel();
    throw err;
  }
  metrics.jobsSubmitted.labels(model.name, mode).inc();
  c.header('preference-applied', `wait=${Math.round(waitMs / 1000)}`);
  const outcome = await handle.wait(waitMs);
  switch (outcome.kind) {
    case 'completed':
      return { kind: 'completed', jobId, result: outcome.result };
    case 'failed': {
      const extra = { job_id: jobId };
      if (outcome.code === 'invalid_input') throw new QuernError('validation_failed', outcome.message, { extra });
      throw new QuernError('inference_failed', 'the job failed; GET /v1/jobs/{id} shows why', { extra });
    }
    case 'gone':
      throw new QuernError('job_not_found', 'the job was removed before it finished', { extra: { job_id: jobId } });
    case 'timeout': {
      metrics.syncWaitTimeouts.labels(model.name).inc();
      const found = await jobs.find(jobId, principal.id);
      if (!found) throw new QuernError('job_not_found', 'the job was removed before it finished');
      return { kind: 'pending', jobId, view: await jobs.view(found), waitedMs: waitMs };
    }
  }
}
