import type { AdmissionLedger } from '@quern/shared';
import type { Job } from 'bullmq';

/** The owner recorded on a job's data, if any (a job that fails the contract still releases its rows). */
function ownerOf(job: Job): string | undefined {
  const owner = (job.data as { owner?: unknown } | undefined)?.owner;
  return typeof owner === 'string' ? owner : undefined;
}

/**
 * Listeners of a model's consumer that release a finished job's rows from its owner's count
 * (`AdmissionLedger`): on completion, and on a failure BullMQ will not retry (an expiry, a cancel
 * and a stall past the limit are such failures too).
 */
export function rowsReleaseListeners(ledger: AdmissionLedger) {
  return {
    completed(job: Job): void {
      const owner = ownerOf(job);
      if (owner && job.id) ledger.release(owner, job.id);
    },
    failed(job: Job | undefined, err: Error): void {
      if (!job?.id) return;
      const final = job.attemptsMade >= (job.opts.attempts ?? 1) || err.name === 'UnrecoverableError';
      const owner = ownerOf(job);
      if (final && owner) ledger.release(owner, job.id);
    },
  };
}
