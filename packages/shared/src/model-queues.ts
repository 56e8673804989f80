import { type ConnectionOptions, type Job, type JobState, Queue } from 'bullmq';
import type { KeySpace } from './keys';
import { partitionOf } from './keys';
import type { ModelManifest } from './model-manifest';

/** BullMQ queues of a model: its default entry's `partitions`, else the deployment's `QUERN_QUEUE_PARTITIONS`. */
export function modelPartitions(manifest: ModelManifest, model: string, fallback: number): number {
  return manifest.models.find((m) => m.name === model)?.partitions ?? fallback;
}

/**
 * The BullMQ queues of one model, one per partition (see `KeySpace.inferenceQueue`). A job lives
 * in the partition its id hashes to, so a job is found from its id with one read. A job added
 * while the model had another number of partitions is not looked for elsewhere (that would cost
 * every miss a read per partition): a change of the count is a drain-first move.
 */
export class ModelQueues {
  constructor(
    readonly model: string,
    readonly partitions: readonly Queue[],
  ) {
    if (partitions.length === 0) throw new Error(`no queues for model ${model}`);
  }

  /** A Queue per partition of the model (`KeySpace.partitions`). */
  static open(keys: KeySpace, model: string, options: { connection: ConnectionOptions; prefix: string }): ModelQueues {
    return new ModelQueues(
      model,
      Array.from({ length: keys.partitions(model) }, (_, p) => new Queue(keys.inferenceQueue(model, p), options)),
    );
  }

  /** The partition a job id belongs in. */
  partitionOf(jobId: string): number {
    return partitionOf(jobId, this.partitions.length);
  }

  /** The queue a job id belongs in. */
  forJob(jobId: string): Queue {
    return this.partitions[this.partitionOf(jobId)] as Queue;
  }

  /** The job, read from its id's partition only (see the class comment). */
  async getJob(jobId: string): Promise<Job | undefined> {
    return this.forJob(jobId).getJob(jobId);
  }

  async getJobState(jobId: string): Promise<JobState | 'unknown'> {
    return this.forJob(jobId).getJobState(jobId);
  }

  /** Job counts summed over the partitions. */
  async getJobCounts(...types: JobState[]): Promise<Record<string, number>> {
    const all = await Promise.all(this.partitions.map((q) => q.getJobCounts(...types)));
    const sum: Record<string, number> = {};
    for (const counts of all) for (const [state, n] of Object.entries(counts)) sum[state] = (sum[state] ?? 0) + n;
    return sum;
  }

  on(event: 'error', listener: (err: Error) => void): void {
    for (const q of this.partitions) q.on(event, listener);
  }

  async close(): Promise<void> {
    await Promise.all(this.partitions.map((q) => q.close()));
  }
}
