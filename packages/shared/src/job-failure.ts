import { z } from 'zod';
import { type ErrorCode, type JobErrorCode, JobErrorCodes } from './errors';

/**
 * Why a job did not succeed, as data: the worker records it as the job's failed reason (JSON),
 * pushes it in its reply, and the API, the job view and the metrics read the fields, never the
 * wording. `row` names the input row that could not be computed (a job shared by several sync
 * callers fails only the caller whose row it is).
 */
export const JobFailure = z.object({
  code: z.enum(JobErrorCodes),
  message: z.string(),
  row: z.number().int().min(0).optional(),
});
export type JobFailure = z.infer<typeof JobFailure>;

/**
 * The one table of what each failure code means: the job's status (`GET /v1/jobs/{id}`, the
 * `quern_jobs_finished_total` outcome) and the problem a sync call answers with.
 */
export const FAILURE_KINDS: Record<JobErrorCode, { status: 'failed' | 'expired' | 'canceled'; problem: ErrorCode }> = {
  invalid_input: { status: 'failed', problem: 'validation_failed' },
  model_unavailable: { status: 'failed', problem: 'inference_failed' },
  inference_failed: { status: 'failed', problem: 'inference_failed' },
  deadline_exceeded: { status: 'expired', problem: 'job_expired' },
  canceled: { status: 'canceled', problem: 'job_canceled' },
  worker_lost: { status: 'failed', problem: 'inference_failed' },
  internal_error: { status: 'failed', problem: 'inference_failed' },
};

/** The reason BullMQ itself records when a job stalled more often than `maxStalledCount` allows. */
const STALL_LIMIT_REASON = 'job stalled more than allowable limit';

/** A failure as the job's failed reason (what BullMQ stores and shows). */
export function encodeFailure(failure: JobFailure): string {
  return JSON.stringify(failure);
}

/**
 * A job's failed reason read back. Besides our own JSON it knows BullMQ's stall-limit text and
 * the `code: message` text of versions before this one (jobs they failed are kept for days);
 * anything else is an unexpected error text (a stack, a driver message), never shown to clients.
 */
export function decodeFailure(reason: string | undefined): JobFailure {
  if (reason?.startsWith('{')) {
    try {
      const parsed = JobFailure.safeParse(JSON.parse(reason));
      if (parsed.success) return parsed.data;
    } catch {
      // not ours: an internal error below
    }
  }
  if (reason === STALL_LIMIT_REASON) {
    return {
      code: 'worker_lost',
      message: 'the workers running this job stopped (crashed or were killed) more often than allowed; submit it again',
    };
  }
  const legacy = /^([a-z_]+): ([\s\S]*)$/.exec(reason ?? '');
  const code = legacy?.[1] as JobErrorCode | undefined;
  if (legacy && code && (JobErrorCodes as readonly string[]).includes(code)) {
    return { code, message: legacy[2] ?? '' };
  }
  return { code: 'internal_error', message: 'the job failed because of an internal error' };
}

/** A row whose output is not finite: its input is outside what the model can compute. */
export function overflowFailure(row: number): JobFailure {
  return {
    code: 'invalid_input',
    message: `the model's output for row ${row} is not a finite number: its input is outside what the model can compute`,
    row,
  };
}
