import type { InferenceJobData, KeySpace, Logger, RedisClient } from '@quern/shared';

/** Most rows, and values (rows × features), of a job pushed over the fast lane. */
export const FAST_LANE_MAX_ROWS = 16;
export const FAST_LANE_MAX_VALUES = 16_384;
/** How often a model's announced workers are read again (never on a request's path). */
const REFRESH_MS = 1_000;
/**
 * Sync callers of this process, per announced worker, above which nothing is pushed: past it the
 * workers are busy (a push would find rows waiting) and coalescing already fills their batches.
 */
const LOAD_PER_WORKER = 16;

/**
 * Jobs a model's queue may hold for a push to go out (checked by the admission script): a push
 * must not overtake a queue, only an idle service's last job or two, not yet handed over.
 */
export const FAST_LANE_MAX_AHEAD = 4;

/** A fast-lane push: published by the admission script once the job is admitted (see `ADMIT_LUA`). */
export interface FastLanePush {
  /** The worker pushed to (the job records it: another worker completes it from this one's early answer). */
  worker: string;
  channel: string;
  message: string;
  maxAhead: number;
}

interface Lane {
  workers: string[];
  next: number;
  readAt: number;
  reading: boolean;
}

/**
 * The API's end of the fast lane (docs/architecture.md, "The sync path"). At low load the
 * slowest part of a sync call is BullMQ's hand-over: the marker wakes the worker, which then asks
 * for the job in a second round trip. So a small sync job is also published, by its admission
 * script, to one worker that announced it serves the model (round robin); an idle worker answers it at once
 * and the BullMQ job stays the record, the retry path and the fallback. Under load (more sync
 * callers than LOAD_PER_WORKER per worker) nothing is pushed: workers are busy, and the push would
 * cost every process work for nothing.
 */
export class FastLane {
  private readonly lanes = new Map<string, Lane>();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly ttlMs: number,
    /** Sync callers this process has waiting now. */
    private readonly load: () => number,
    private readonly logger: Logger,
  ) {}

  /**
   * Where to push the job, if anywhere: the channel of the next announced worker of its model and
   * the message, which the admission script publishes once it admits the job (and only if the
   * queue is not paused and holds fewer than FAST_LANE_MAX_AHEAD jobs: `ADMIT_LUA`). Undefined for a job that is not small, is traced or has a
   * webhook, when no worker is announced, or under load.
   */
  pushFor(id: string, data: InferenceJobData, rows: number, values: number): FastLanePush | undefined {
    if (rows > FAST_LANE_MAX_ROWS || values > FAST_LANE_MAX_VALUES || data.trace || data.webhook) return undefined;
    const lane = this.lane(data.model);
    const count = lane.workers.length;
    if (count === 0 || this.load() > count * LOAD_PER_WORKER) return undefined;
    const worker = lane.workers[lane.next++ % count] as string;
    return {
      worker,
      channel: this.keys.fastLaneChannel(worker),
      message: JSON.stringify({ id, data }),
      maxAhead: FAST_LANE_MAX_AHEAD,
    };
  }

  /** The workers announced for `model` as last read (a read older than REFRESH_MS starts another). */
  workersOf(model: string): readonly string[] {
    return this.lane(model).workers;
  }

  /** The model's announced workers as last read; a read older than REFRESH_MS starts another. */
  private lane(model: string): Lane {
    let lane = this.lanes.get(model);
    if (!lane) {
      lane = { workers: [], next: 0, readAt: 0, reading: false };
      this.lanes.set(model, lane);
    }
    const now = Date.now();
    if (!lane.reading && now - lane.readAt >= REFRESH_MS) {
      const current = lane;
      current.reading = true;
      this.redis
        .zrangebyscore(this.keys.fastLaneWorkers(model), now - this.ttlMs, '+inf')
        .then(
          (workers) => {
            current.workers = workers;
          },
          (err: Error) => this.logger.debug({ err: err.message }, 'fast lane workers not read'),
        )
        .finally(() => {
          current.readAt = Date.now();
          current.reading = false;
        });
    }
    return lane;
  }
}
