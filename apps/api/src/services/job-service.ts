import {
  type Config,
  decodeJobError,
  INFERENCE_JOB_NAME,
  InferenceJobData,
  InferenceResult,
  inferenceJobOptions,
  type JobErrorCode,
  type ModelEntry,
  newId,
  type SubmitMode,
} from '@quern/shared';
import type { Job, JobState, Queue } from 'bullmq';
import type { ModelRegistry } from './model-registry';

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled' | 'expired';

/** The job resource as `GET /v1/jobs/{id}` returns it. */
export interface JobView {
  id: string;
  status: JobStatus;
  model: string;
  model_version: string;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  output: { prediction: number | number[] } | { predictions: (number | number[])[] } | null;
  error: { code: string; message: string } | null;
  timings: { queue_ms: number; inference_ms: number; batch_size: number } | null;
}

export interface FoundJob {
  job: Job;
  data: InferenceJobData;
  model: ModelEntry;
}

export interface SubmitArgs {
  model: ModelEntry;
  rows: number[][];
  mode: SubmitMode;
  owner: string;
  requestId: string;
  /** Lets the caller register a waiter before the job exists (so no completion is missed). */
  jobId?: string;
}

const iso = (ms: number | undefined | null): string | null => (ms ? new Date(ms).toISOString() : null);

function statusOf(state: JobState | 'unknown', failure: JobErrorCode | undefined): JobStatus {
  switch (state) {
    case 'active':
      return 'running';
    case 'completed':
      return 'succeeded';
    case 'failed':
      return failure === 'canceled' ? 'canceled' : failure === 'deadline_exceeded' ? 'expired' : 'failed';
    default:
      // waiting, prioritized, delayed (a retry's backoff), waiting-children
      return 'queued';
  }
}

/**
 * Creates inference jobs and reads them back as job resources. Job ids are random (`job_…`),
 * never BullMQ's counter, and every read checks the owner: another principal's job is
 * reported exactly like a job that does not exist.
 */
export class JobService {
  constructor(
    private readonly queues: ReadonlyMap<string, Queue>,
    private readonly models: ModelRegistry,
    private readonly config: Config,
  ) {}

  queueOf(model: string): Queue {
    const queue = this.queues.get(model);
    if (!queue) throw new Error(`no queue for model ${model}`);
    return queue;
  }

  async submit(args: SubmitArgs): Promise<{ id: string; data: InferenceJobData }> {
    const id = args.jobId ?? newId('job');
    const data: InferenceJobData = {
      v: 1,
      model: args.model.name,
      model_version: args.model.version,
      rows: args.rows,
      mode: args.mode,
      owner: args.owner,
      request_id: args.requestId,
      created_at: Date.now(),
    };
    await this.queueOf(args.model.name).add(INFERENCE_JOB_NAME, data, {
      jobId: id,
      ...inferenceJobOptions(this.config),
    });
    return { id, data };
  }

  /** The job if it exists and belongs to `owner`; null otherwise (the caller answers 404 either way). */
  async find(id: string, owner: string): Promise<FoundJob | null> {
    if (!/^job_[0-9A-Za-z]{22}$/.test(id)) return null;
    const jobs = await Promise.all([...this.queues.values()].map((queue) => queue.getJob(id)));
    const job = jobs.find((j): j is Job => j !== undefined && j !== null);
    if (!job) return null;
    const parsed = InferenceJobData.safeParse(job.data);
    if (!parsed.success || parsed.data.owner !== owner) return null;
    const model = this.models.find(parsed.data.model);
    if (!model) return null;
    return { job, data: parsed.data, model };
  }

  /**
   * The job's state, consistent with the fields read: a finished job's hash holds `finishedOn`
   * with its return value or failure (written together), so no second read is needed; for an
   * unfinished one BullMQ's state script tells waiting from active, and a job that finished in
   * between is read again.
   */
  private async settledState(found: FoundJob): Promise<{ job: Job; state: JobState | 'unknown' }> {
    const finished = (job: Job) => (job.returnvalue !== null && job.returnvalue !== undefined ? 'completed' : 'failed');
    if (found.job.finishedOn) return { job: found.job, state: finished(found.job) };
    const state = await found.job.getState();
    if (state !== 'completed' && state !== 'failed') return { job: found.job, state };
    const fresh = await this.queueOf(found.data.model).getJob(found.job.id as string);
    return fresh?.finishedOn ? { job: fresh, state: finished(fresh) } : { job: found.job, state };
  }

  async view(found: FoundJob): Promise<JobView> {
    const { data, model } = found;
    const { job, state } = await this.settledState(found);
    const failure = state === 'failed' ? decodeJobError(job.failedReason) : undefined;
    const status = statusOf(state, failure?.code);
    const result = state === 'completed' ? InferenceResult.safeParse(job.returnvalue) : undefined;
    const done = result?.success ? result.data : undefined;
    return {
      id: job.id as string,
      status,
      model: data.model,
      model_version: done?.model_version ?? data.model_version,
      created_at: iso(job.timestamp) as string,
      started_at: iso(done?.started_at ?? job.processedOn),
      completed_at: iso(done?.finished_at ?? job.finishedOn),
      output: done ? this.presentOutput(model, data, done.outputs) : null,
      error: failure ? { code: failure.code, message: failure.message } : null,
      timings: done ? done.timings : null,
    };
  }

  presentOutput(model: ModelEntry, data: InferenceJobData, outputs: number[][]): JobView['output'] {
    const shaped = outputs.map((o) => this.models.present(model, o));
    return data.mode === 'batch' ? { predictions: shaped } : { prediction: shaped[0] as number | number[] };
  }
}
