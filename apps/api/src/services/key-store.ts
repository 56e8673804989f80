import { createHash } from 'node:crypto';
import { apiKeyPrefix, execBatch, type KeySpace, newApiKey, newId, type RedisClient } from '@quern/shared';
import { isScope, type Scope, TIERS, type Tier } from './principal';

/** An API key as stored and listed: everything but the key, which is never stored. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  tier: Tier;
  scopes: Scope[];
  /** `qk_` + the first 8 characters: names the key in logs and listings. */
  prefix: string;
  created_at: number;
  revoked_at: number | null;
  /** Fair-share weight within the tier (unset: the tier's, QUERN_FAIR_WEIGHT_FREE / _PREMIUM). */
  weight: number | null;
  /** Cap on the key's queued-or-running rows; the tier's when unset. */
  max_rows: number | null;
}

/** What an admin may change on a key: its share of its tier's queue and its row cap (null: the default). */
export interface KeyLimits {
  weight?: number | null | undefined;
  max_rows?: number | null | undefined;
}

export interface NewKeySpec {
  name: string;
  tier: Tier;
  scopes: Scope[];
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

function fromHash(hash: Record<string, string>): ApiKeyRecord | null {
  if (!hash.id) return null;
  const tier = (TIERS as readonly string[]).includes(hash.tier ?? '') ? (hash.tier as Tier) : 'free';
  return {
    id: hash.id,
    name: hash.name ?? '',
    tier,
    scopes: (hash.scopes ?? '').split(' ').filter(isScope),
    prefix: hash.prefix ?? '',
    created_at: Number(hash.created_at ?? 0),
    revoked_at: hash.revoked_at ? Number(hash.revoked_at) : null,
    weight: hash.weight ? Number(hash.weight) : null,
    max_rows: hash.max_rows ? Number(hash.max_rows) : null,
  };
}

/**
 * API keys in Redis. Only the SHA-256 of a key is kept (a key has 256 random bits, so a plain
 * hash is enough: there is nothing to brute-force), mapped to the key's record; the key itself
 * is returned once, by `create`, and never stored or logged.
 */
export class KeyStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
  ) {}

  async create(spec: NewKeySpec): Promise<{ key: string; record: ApiKeyRecord }> {
    const { key } = newApiKey();
    const record = await this.put(key, spec, newId('key'));
    return { key, record };
  }

  /**
   * Stores a key chosen elsewhere (the development key), or refreshes it: same id, the given
   * tier and scopes, not revoked.
   */
  async upsertKnownKey(key: string, spec: NewKeySpec): Promise<ApiKeyRecord> {
    const existing = await this.redis.get(this.keys.apiKeyByHash(sha256Hex(key)));
    return this.put(key, spec, existing ?? newId('key'));
  }

  private async put(key: string, spec: NewKeySpec, id: string): Promise<ApiKeyRecord> {
    const record: ApiKeyRecord = {
      id,
      name: spec.name,
      tier: spec.tier,
      scopes: [...new Set(spec.scopes)],
      prefix: apiKeyPrefix(key),
      created_at: Date.now(),
      revoked_at: null,
      weight: null,
      max_rows: null,
    };
    // Three keys that may live on three shards of a Cluster: the record first (replaced whole),
    // then the key's lookup (a key is found only once its record exists), then the listing.
    await this.redis
      .multi()
      .del(this.keys.apiKey(id))
      .hset(this.keys.apiKey(id), {
        id,
        name: record.name,
        tier: record.tier,
        scopes: record.scopes.join(' '),
        prefix: record.prefix,
        created_at: String(record.created_at),
      })
      .exec();
    await this.redis.set(this.keys.apiKeyByHash(sha256Hex(key)), id);
    await this.redis.zadd(this.keys.apiKeyIds(), record.created_at, id);
    return record;
  }

  /** The record of a presented key, or null if no such key was ever created. */
  async findByKey(key: string): Promise<ApiKeyRecord | null> {
    const id = await this.redis.get(this.keys.apiKeyByHash(sha256Hex(key)));
    return id ? this.get(id) : null;
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    if (!/^key_[0-9A-Za-z]{22}$/.test(id)) return null;
    return fromHash(await this.redis.hgetall(this.keys.apiKey(id)));
  }

  async list(): Promise<ApiKeyRecord[]> {
    const ids = await this.redis.zrange(this.keys.apiKeyIds(), '0', '-1');
    const results = await execBatch(
      this.redis,
      ids.map((id) => ['hgetall', this.keys.apiKey(id)]),
    );
    return results
      .map(([err, hash]) => (err ? null : fromHash(hash as Record<string, string>)))
      .filter((r): r is ApiKeyRecord => r !== null);
  }

  /** Sets (or, with null, clears) a key's weight and row cap; null if there is no such key. */
  async setLimits(id: string, limits: KeyLimits): Promise<ApiKeyRecord | null> {
    const record = await this.get(id);
    if (!record) return null;
    const multi = this.redis.multi();
    for (const field of ['weight', 'max_rows'] as const) {
      const value = limits[field];
      if (value === undefined) continue;
      if (value === null) multi.hdel(this.keys.apiKey(id), field);
      else multi.hset(this.keys.apiKey(id), field, String(value));
      record[field] = value;
    }
    await multi.exec();
    return record;
  }

  /** Marks a key revoked (kept, so a revoked key is told apart from an unknown one). */
  async revoke(id: string): Promise<ApiKeyRecord | null> {
    const record = await this.get(id);
    if (!record) return null;
    if (record.revoked_at === null) {
      record.revoked_at = Date.now();
      await this.redis.hset(this.keys.apiKey(id), 'revoked_at', String(record.revoked_at));
    }
    return record;
  }
}
