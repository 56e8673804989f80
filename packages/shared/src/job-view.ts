import { decodeFailure, FAILURE_KINDS } from './job-failure';
import { type InferenceJobData, InferenceResult, jobRowCount } from './jobs';
import { type ModelEntry, outputSize } from './model-manifest';
import { type OipInferenceResponse, oipResponse } from './oip';
import type { DeliveryState } from './webhooks';

/** Every status a job resource can show. */
export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'canceled', 'expired'];

/** BullMQ's states, plus `canceled` for a job removed from the queue by its owner. */
export type JobStateName =
  | 'waiting'
  | 'prioritized'
  | 'delayed'
  | 'waiting-children'
  | 'active'
  | 'completed'
  | 'failed'
  | 'canceled'
  | 'unknown';

/** The job resource, as `GET /v1/jobs/{id}`, SSE events and webhooks carry it. */
export interface JobView {
  id: string;
  status: JobStatus;
  model: string;
  model_version: string;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  expires_at: string;
  priority: number;
  /** While queued: where the job stands (GET /v1/jobs/{id} and the SSE stream; absent elsewhere). */
  queue?: QueueStanding | null;
  /** A job created through the OIP (`/v2/.../infer`) shows its output as an OIP inference response. */
  output: { prediction: number | number[] } | { predictions: (number | number[])[] } | OipInferenceResponse | null;
  error: { code: string; message: string } | null;
  timings: { queue_ms: number; inference_ms: number; batch_size: number } | null;
  webhook: {
    url: string;
    events: string[];
    status: DeliveryState['status'] | null;
    attempts: number;
    last_status_code: number | null;
    next_attempt_at: string | null;
    deliveries: DeliveryState[];
  } | null;
}

/** Where a queued job stands in its model's queue (docs/scheduling.md). */
export interface QueueStanding {
  /** Jobs that BullMQ will hand out before this one. */
  position: number;
  /** Rows of those jobs, estimated from the mean rows of the model's recent jobs. */
  ahead_rows: number;
  /** Time until a worker takes it, at the model's drain rate over the last minute; null before any drained. */
  eta_ms: number | null;
}

/** What is known of a job at one moment, read from BullMQ (or a cancel record). */
export interface JobSnapshot {
  id: string;
  data: InferenceJobData;
  state: JobStateName;
  returnvalue?: unknown;
  failedReason?: string | undefined;
  timestamp: number;
  processedOn?: number | undefined;
  finishedOn?: number | undefined;
  deliveries?: DeliveryState[];
}

const iso = (ms: number | undefined | null): string | null => (ms ? new Date(ms).toISOString() : null);

/** A row's output as the API shows it: a number for models with one output value, else the array. */
export function presentPrediction(model: ModelEntry, output: number[]): number | number[] {
  return outputSize(model) === 1 && model.output.shape.length === 1 ? (output[0] as number) : output;
}

/** Builds the job resource. A job still queued past its deadline already reads as `expired`. */
export function jobView(snapshot: JobSnapshot, model: ModelEntry, now = Date.now()): JobView {
  const { data, state } = snapshot;
  const parsed = state === 'completed' ? InferenceResult.safeParse(snapshot.returnvalue) : undefined;
  const done = parsed?.success ? parsed.data : undefined;
  let status: JobStatus;
  let error: JobView['error'] = null;
  switch (state) {
    case 'active':
      status = 'running';
      break;
    case 'completed':
      status = 'succeeded';
      break;
    case 'canceled':
      status = 'canceled';
      error = { code: 'canceled', message: 'the job was canceled by its owner before it ran' };
      break;
    case 'failed': {
      const { code, message } = decodeFailure(snapshot.failedReason);
      status = FAILURE_KINDS[code].status;
      error = { code, message };
      break;
    }
    default:
      status = 'queued';
      if (now > data.deadline_at) {
        status = 'expired';
        error = { code: 'deadline_exceeded', message: 'the job was still queued at its deadline' };
      }
  }
  const shaped = done?.outputs.map((o) => presentPrediction(model, o));
  // `started_at` has one meaning in every view (running, final, GET, SSE, webhooks): when a worker
  // took the job (BullMQ's processedOn), which is also when it turns `running`; so the running and
  // final views agree. When its batch began computing is `created_at + timings.queue_ms`. An expired or
  // canceled job never ran: no start time, even once a worker has dropped it; an expired one ended
  // at its deadline, whenever a worker got to it.
  const ran = status !== 'expired' && status !== 'canceled';
  const taken = state === 'active' || state === 'completed' || state === 'failed';
  const startedAt = ran && taken ? (snapshot.processedOn ?? done?.started_at) : undefined;
  const completedAt =
    status === 'expired'
      ? data.deadline_at
      : (done?.finished_at ?? (TERMINAL_STATUSES.includes(status) ? snapshot.finishedOn : undefined));
  const deliveries = snapshot.deliveries ?? [];
  const last = deliveries[deliveries.length - 1];
  return {
    id: snapshot.id,
    status,
    model: data.model,
    model_version: done?.model_version ?? data.model_version,
    created_at: iso(snapshot.timestamp) as string,
    started_at: iso(startedAt),
    completed_at: iso(completedAt),
    expires_at: new Date(data.deadline_at).toISOString(),
    priority: data.priority,
    // A batch job, or sync calls coalesced into one job, list every row's prediction.
    output: shaped
      ? data.oip && done
        ? oipResponse(model, done.model_version, done.outputs, data.oip.id)
        : data.mode === 'batch' || jobRowCount(data) > 1
          ? { predictions: shaped }
          : { prediction: shaped[0] as number | number[] }
      : null,
    error,
    timings: done ? done.timings : null,
    webhook: data.webhook
      ? {
          url: data.webhook.url,
          events: data.webhook.events,
          status: last?.status ?? null,
          attempts: last?.attempts ?? 0,
          last_status_code: last?.last_status_code ?? null,
          next_attempt_at: last?.next_attempt_at ?? null,
          deliveries,
        }
      : null,
  };
}
