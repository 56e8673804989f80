import { type Config, loadConfig } from '@quern/shared';
import type { TestRedis } from './test-redis';

/** Keys test stacks store (premium, every scope) before their first request. */
export const TEST_API_KEY = 'qk_test_0123456789abcdefghijklmnop';
export const OTHER_API_KEY = 'qk_test_other_zyxwvutsrqponmlkjihg';
/** A signing key for access tokens in tests. */
export const TEST_JWT_KEYS = 'test-1:0123456789abcdef0123456789abcdef,test-0:fedcba9876543210fedcba9876543210';

/** Configuration for a test: its own Redis and prefix, quiet logs, small timings. */
/** Every setting (API and worker run in one test process). */
export function testConfig(redis: Pick<TestRedis, 'url' | 'prefix'>, overrides: Record<string, string> = {}): Config {
  return loadConfig(
    {
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      REDIS_URL: redis.url,
      QUERN_REDIS_PREFIX: redis.prefix,
      QUERN_JWT_KEYS: TEST_JWT_KEYS,
      // Tests share one client address; the auth-failure limit gets its own test.
      QUERN_AUTH_FAILURES_PER_MINUTE: '100000',
      QUERN_KEY_CACHE_TTL_MS: '200',
      QUERN_WORKER_THREADS: '2',
      QUERN_WORKER_PORT: '0',
      PORT: '0',
      QUERN_WAIT_POLL_INTERVAL_MS: '250',
      QUERN_HEARTBEAT_INTERVAL_MS: '500',
      QUERN_HEARTBEAT_TTL_MS: '3000',
      ...overrides,
    },
    'all',
  );
}

/** What `seedTestKeys` needs of the API's key store. */
export interface KnownKeyStore<S extends string> {
  upsertKnownKey(key: string, spec: { name: string; tier: 'premium'; scopes: S[] }): Promise<unknown>;
}

/** Stores the two fixed test keys (premium, every scope given) so tests can use them by value. */
export async function seedTestKeys<S extends string>(store: KnownKeyStore<S>, scopes: readonly S[]): Promise<void> {
  await store.upsertKnownKey(TEST_API_KEY, { name: 'test', tier: 'premium', scopes: [...scopes] });
  await store.upsertKnownKey(OTHER_API_KEY, { name: 'other', tier: 'premium', scopes: [...scopes] });
}
