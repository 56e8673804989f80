import type { AdmissionLedger } from '@quern/shared';
import type { Job } from 'bullmq';

/**
 * Listeners of a model's consumer (one queue partition) for a job BullMQ puts back in the queue:
 * after a failed attempt that will be retried, and after a stall. BullMQ re-adds it with the
 * priority number it was admitted with; with fair share that number can be late (a rebase of
 * its band since, and a new arrival counter behind the jobs of its number), so the job goes to
 * the front of its class's band instead (`AdmissionLedger.requeued`, docs/scheduling.md).
 */
export function requeueListeners(ledger: AdmissionLedger, queueKey: string, onError: (err: Error) => void) {
  const requeue = (jobId: string) => {
    ledger.requeued(queueKey, jobId).catch(onError);
  };
  return {
    failed(job: Job | undefined, err: Error): void {
      if (!job?.id) return;
      const final = job.attemptsMade >= (job.opts.attempts ?? 1) || err.name === 'UnrecoverableError';
      if (!final) requeue(job.id);
    },
    stalled(jobId: string): void {
      requeue(jobId);
    },
  };
}
