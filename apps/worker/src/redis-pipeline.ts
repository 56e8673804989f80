import { type BatchCommand, execBatch, getMany, type RedisClient, TurnBuffer } from '@quern/shared';

interface Read {
  keys: string[];
  resolve: (values: (string | null)[]) => void;
  reject: (err: unknown) => void;
}

interface Write {
  entries: [key: string, value: string, ttlSeconds?: number][];
  reply: { channel: string; message: string } | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * The worker's own Redis reads and writes for many jobs, one round trip per burst: the reads of
 * every job started in a turn (cancel records, cached rows) go out as one MGET (a GET per key,
 * pipelined per shard, on a Cluster); the cache entries
 * and replies of every job finished together as one pipeline. A worker starting and finishing
 * hundreds of jobs a second would otherwise make a round trip (and a syscall) for each. Reads wait
 * for the end of the turn (jobs start one I/O callback at a time); writes go as soon as the
 * continuations already queued have run (a reply is on a waiting caller's critical path).
 */
export class RedisPipeline {
  private readonly reads: TurnBuffer<Read>;
  private readonly writes: TurnBuffer<Write>;

  /**
   * `onWriteErrors` hears the commands of a flush that Redis refused one by one (an OOM under
   * maxmemory refuses a SET while the connection is fine). The cache is an optimisation and the
   * reply has QueueEvents behind it, so such errors are reported, not turned into failed jobs:
   * the job's result is safe in BullMQ either way.
   */
  constructor(
    redis: RedisClient,
    ttlSeconds: number,
    onWriteErrors: (errors: Error[], commands: number) => void = () => {},
  ) {
    this.reads = new TurnBuffer<Read>((reads) => {
      getMany(
        redis,
        reads.flatMap((r) => r.keys),
      ).then(
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
    }, 'turn');
    this.writes = new TurnBuffer<Write>((writes) => {
      const commands: BatchCommand[] = [];
      for (const w of writes) {
        for (const [key, value, ttl] of w.entries) commands.push(['set', key, value, 'EX', ttl ?? ttlSeconds]);
        if (w.reply) commands.push(['publish', w.reply.channel, w.reply.message]);
      }
      // One pipeline (one per shard on a Cluster, where the cache keys are spread).
      execBatch(redis, commands).then(
        (results) => {
          const errors = results.flatMap(([err]) => (err ? [err] : []));
          if (errors.length > 0) onWriteErrors(errors, results.length);
          for (const w of writes) w.resolve();
        },
        (err: unknown) => {
          for (const w of writes) w.reject(err);
        },
      );
    }, 'tick');
  }

  /** Values of `keys` (null where missing), read together with everyone else's this turn. */
  mget(keys: string[]): Promise<(string | null)[]> {
    if (keys.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => this.reads.push({ keys, resolve, reject }));
  }

  /**
   * Stores each value with the cache TTL (or its own) and publishes `reply` (a sync job's answer to the API
   * process waiting on it), together with everyone else's writes: one pipeline, one write to the
   * socket, whatever the number of jobs that finished.
   */
  setEx(
    entries: [key: string, value: string, ttlSeconds?: number][],
    reply?: { channel: string; message: string },
  ): Promise<void> {
    if (entries.length === 0 && !reply) return Promise.resolve();
    return new Promise((resolve, reject) => this.writes.push({ entries, reply, resolve, reject }));
  }
}
