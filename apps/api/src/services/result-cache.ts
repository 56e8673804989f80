import {
  decodeCachedRow,
  getMany,
  inputHash,
  type KeySpace,
  type ModelEntry,
  outputSize,
  type RedisClient,
  type Row,
} from '@quern/shared';

/**
 * Read side of the result cache the workers fill. Keys hold model name, version and the hash of
 * the float32 input, so a new model version never answers from an old version's entries.
 */
export class ResultCache {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly ttlSeconds: number,
  ) {}

  get enabled(): boolean {
    return this.ttlSeconds > 0;
  }

  /** Cached outputs for each row, or null where a row is not cached. */
  async lookup(model: ModelEntry, rows: readonly Row[]): Promise<(number[] | null)[]> {
    if (!this.enabled) return rows.map(() => null);
    const size = outputSize(model);
    const keys = rows.map((row) => this.keys.cache(model.name, model.version, inputHash(row)));
    // One MGET; on a Cluster, where the rows' keys are on every shard, a GET per key pipelined per shard.
    const raw = await getMany(this.redis, keys);
    return raw.map((value) => decodeCachedRow(value, size));
  }
}
