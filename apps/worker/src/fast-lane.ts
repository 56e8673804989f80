import { createRedis, type KeySpace, type Logger, type RedisClient, type WorkerConfig } from '@quern/shared';
import { beat } from './heartbeat';

/** Largest fast-lane message read; the API sends only small jobs (FAST_LANE_MAX_VALUES in the API). */
const MAX_MESSAGE_BYTES = 1024 * 1024;

/** What the fast lane hands a model's processor: the job's id and its data as the API wrote it. */
export type FastJobHandler = (id: string, data: unknown) => void;

/**
 * The worker's end of the fast lane (docs/architecture.md, "The sync path"). The worker announces
 * itself in each served model's set of fast-lane workers (`fastLaneWorkers`, scored by time, like
 * the heartbeat) and listens on a channel of its own; an API process picks one announced worker per
 * small sync job, and the job's admission script publishes it there (apps/api fast-lane.ts). The model's processor
 * decides whether to answer it early (`fast` in inference-processor.ts).
 */
export class FastLaneListener {
  private readonly subscriber: RedisClient;
  private timer: NodeJS.Timeout | undefined;
  private open = false;

  constructor(
    config: WorkerConfig,
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly workerId: string,
    private readonly handlers: ReadonlyMap<string, FastJobHandler>,
    private readonly intervalMs: number,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {
    this.subscriber = createRedis(config, 'consumer', { name: 'worker-fast-lane', logger });
    this.subscriber.on('message', (_channel: string, message: string) => this.onMessage(message));
  }

  async start(): Promise<void> {
    await this.subscriber.subscribe(this.keys.fastLaneChannel(this.workerId));
    this.open = true;
    const announce = () => {
      // One beat per model: each model's set may live on another Cluster shard.
      for (const model of this.handlers.keys()) {
        beat(this.redis, this.keys.fastLaneWorkers(model), this.workerId, this.ttlMs).catch((err: Error) =>
          this.logger.warn({ model, err: err.message }, 'fast lane announce failed'),
        );
      }
    };
    announce();
    this.timer = setInterval(announce, this.intervalMs);
    this.timer.unref();
  }

  private onMessage(message: string): void {
    if (!this.open || message.length > MAX_MESSAGE_BYTES) return;
    let parsed: { id?: unknown; data?: { model?: unknown } };
    try {
      parsed = JSON.parse(message) as typeof parsed;
    } catch {
      return;
    }
    const model = parsed.data?.model;
    if (typeof parsed.id !== 'string' || typeof model !== 'string') return;
    this.handlers.get(model)?.(parsed.id, parsed.data);
  }

  /** Stops answering early (the worker drains): withdraws from the sets, then stops listening. */
  async stop(): Promise<void> {
    this.open = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all(
      [...this.handlers.keys()].map((model) =>
        this.redis.zrem(this.keys.fastLaneWorkers(model), this.workerId).catch(() => undefined),
      ),
    );
    await this.subscriber.quit().catch(() => this.subscriber.disconnect());
  }
}
