import { addShadowStats, type KeySpace, type Logger, type RedisClient, shadowVersions } from '@quern/shared';
import type { BatchScheduler } from './batch-scheduler';
import type { WorkerMetrics } from './metrics';
import type { ModelSet } from './models';

export interface ShadowRunnerOptions {
  models: ModelSet;
  scheduler: BatchScheduler;
  redis: RedisClient;
  keys: KeySpace;
  metrics: WorkerMetrics;
  logger: Logger;
  /** Rows waiting for a thread above which shadow runs are skipped (live work first). */
  maxPendingRows: number;
  /** Injected in tests; `Math.random` otherwise. */
  random?: () => number;
}

/**
 * Shadow runs: after a job of a model's default version has been answered, a sample of its rows
 * also runs on each shadow version held here, and the difference between the two outputs (per
 * row: mean and max absolute difference) is added to the version's totals in Redis
 * (`GET /v1/models/{name}/versions/{v}`) and to this worker's metrics. It never touches the job:
 * it starts after the answer, its failures are counted and dropped, and it is skipped while live
 * rows wait for a thread.
 */
export class ShadowRunner {
  private readonly random: () => number;

  constructor(private readonly options: ShadowRunnerOptions) {
    this.random = options.random ?? Math.random;
  }

  /** A live job's rows and answers: sampled onto each shadow version. Returns at once. */
  offer(name: string, liveVersion: string, rows: readonly Float32Array[], outputs: readonly number[][]): void {
    const routing = this.options.models.routing(name);
    if (!routing || liveVersion !== routing.default_version) return;
    for (const { version, sample } of shadowVersions(routing)) {
      if (sample <= 0 || this.random() >= sample) continue;
      const served = this.options.models.get(name, version);
      if (!served || served.pool.outputSize !== outputs[0]?.length) continue;
      const labels = { model: name, version };
      if (this.options.scheduler.pendingRows() > this.options.maxPendingRows) {
        this.options.metrics.shadowRows.inc({ ...labels, outcome: 'skipped' }, rows.length);
        continue;
      }
      void this.compare(name, version, served.pool.name, rows, outputs).catch((err: Error) => {
        this.options.metrics.shadowRows.inc({ ...labels, outcome: 'failed' }, rows.length);
        this.options.logger.warn({ model: name, version, err: err.message }, 'shadow run failed');
      });
    }
  }

  private async compare(
    name: string,
    version: string,
    ref: string,
    rows: readonly Float32Array[],
    live: readonly number[][],
  ): Promise<void> {
    const result = await this.options.scheduler.submit(ref, rows);
    const size = live[0]?.length ?? 0;
    const { metrics } = this.options;
    const labels = { model: name, version };
    let sumOfMeans = 0;
    let max = 0;
    rows.forEach((_, r) => {
      const want = live[r] ?? [];
      let sum = 0;
      for (let k = 0; k < size; k++) {
        const diff = Math.abs((result.output[r * size + k] as number) - (want[k] as number));
        sum += diff;
        if (diff > max) max = diff;
      }
      const mean = size > 0 ? sum / size : 0;
      sumOfMeans += mean;
      metrics.shadowRowMeanAbsDiff.observe(labels, mean);
    });
    metrics.shadowRows.inc({ ...labels, outcome: 'compared' }, rows.length);
    metrics.versionBatchSize.observe(labels, result.batchSize);
    const gauge = (await metrics.shadowMaxAbsDiff.get()).values.find(
      (v) => v.labels.model === name && v.labels.version === version,
    );
    if (!gauge || gauge.value < max) metrics.shadowMaxAbsDiff.set(labels, max);
    await addShadowStats(this.options.redis, this.options.keys, name, version, rows.length, sumOfMeans, max);
  }
}
