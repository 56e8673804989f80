import { type AdmissionLedger, InferenceResult, type UsageRecorder } from '@quern/shared';
import type { Job } from 'bullmq';

/** The owner recorded on a job's data, if any (a job that fails the contract still releases its rows). */
function ownerOf(job: Job): string | undefined {
  const owner = (job.data as { owner?: unknown } | undefined)?.owner;
  return typeof owner === 'string' ? owner : undefined;
}

/**
 * Listeners of a model's consumer for a job's end: its rows stop counting for its owner
 * (`AdmissionLedger`), and its owner's usage of the hour grows (`UsageRecorder`). On completion,
 * and on a failure BullMQ will not retry (an expiry, a cancel and a stall past the limit are such
 * failures too).
 */
export function rowsReleaseListeners(ledger: AdmissionLedger, usage?: UsageRecorder) {
  return {
    completed(job: Job): void {
      const owner = ownerOf(job);
      if (!owner || !job.id) return;
      ledger.release(owner, job.id);
      if (!usage) return;
      const result = InferenceResult.safeParse(job.returnvalue);
      if (!result.success) return;
      const { outputs, cached, timings } = result.data;
      const computed = cached.filter((c) => !c).length;
      // The job's share of its batches' time: the batch's time is shared by all of its rows.
      const share = timings.batch_size > 0 ? (timings.inference_ms * computed) / timings.batch_size : 0;
      usage.record({ owner, at: Date.now(), succeeded: true, rows: outputs.length, inferenceMs: share });
    },
    failed(job: Job | undefined, err: Error): void {
      if (!job?.id) return;
      const final = job.attemptsMade >= (job.opts.attempts ?? 1) || err.name === 'UnrecoverableError';
      const owner = ownerOf(job);
      if (!final || !owner) return;
      ledger.release(owner, job.id);
      usage?.record({ owner, at: Date.now(), succeeded: false, rows: 0, inferenceMs: 0 });
    },
  };
}
