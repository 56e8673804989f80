import type { RedisClient } from '@quern/shared';

interface Read {
  keys: string[];
  resolve: (values: (string | null)[]) => void;
  reject: (err: unknown) => void;
}

interface Write {
  entries: [key: string, value: string][];
  reply: { channel: string; message: string } | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Reads and writes of many jobs, one round trip per burst: the reads of every job
 * started in a turn go out as one MGET, their cache writes as one pipeline. A worker fetching
 * hundreds of jobs a second would otherwise make a round trip (and a syscall) for each.
 */
export class RedisBatcher {
  private reads: Read[] = [];
  private writes: Write[] = [];
  private readsScheduled = false;
  private writesScheduled = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly ttlSeconds: number,
  ) {}

  /** Values of `keys` (null where missing), read together with everyone else's this turn. */
  mget(keys: string[]): Promise<(string | null)[]> {
    if (keys.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.reads.push({ keys, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Stores each value with the cache TTL and publishes `reply` (a sync job's answer to the API
   * process waiting on it), together with everyone else's writes this turn: one pipeline, one
   * write to the socket, whatever the number of jobs that finished.
   */
  setEx(entries: [key: string, value: string][], reply?: { channel: string; message: string }): Promise<void> {
    if (entries.length === 0 && !reply) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.writes.push({ entries, reply, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Reads wait for the end of the event-loop turn: jobs start one I/O callback at a time, and a
   * turn gathers the starts of many. Writes go after every continuation already queued has run
   * (a batch's jobs finish together), without waiting for another turn: a reply is on the
   * critical path of a waiting caller.
   */
  private schedule(): void {
    if (this.reads.length > 0 && !this.readsScheduled) {
      this.readsScheduled = true;
      setImmediate(() => {
        this.readsScheduled = false;
        this.flushReads();
      });
    }
    if (this.writes.length > 0 && !this.writesScheduled) {
      this.writesScheduled = true;
      process.nextTick(() => {
        this.writesScheduled = false;
        this.flushWrites();
      });
    }
  }

  private flushReads(): void {
    const reads = this.reads;
    this.reads = [];
    if (reads.length === 0) return;
    this.redis.mget(...reads.flatMap((r) => r.keys)).then(
      (values) => {
        let at = 0;
        for (const r of reads) {
          r.resolve(values.slice(at, at + r.keys.length));
          at += r.keys.length;
        }
      },
      (err: unknown) => {
        for (const r of reads) r.reject(err);
      },
    );
  }

  private flushWrites(): void {
    const writes = this.writes;
    this.writes = [];
    if (writes.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const w of writes) {
      for (const [key, value] of w.entries) pipeline.set(key, value, 'EX', this.ttlSeconds);
      if (w.reply) pipeline.publish(w.reply.channel, w.reply.message);
    }
    pipeline.exec().then(
      () => {
        for (const w of writes) w.resolve();
      },
      (err: unknown) => {
        for (const w of writes) w.reject(err);
      },
    );
  }
}
