import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config';
import { KeySpace } from './keys';

describe('loadConfig', () => {
  it('gives defaults for an empty environment', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      NODE_ENV: 'development',
      PORT: 8000,
      HOST: '127.0.0.1',
      REDIS_URL: 'redis://127.0.0.1:6379',
      QUERN_REDIS_PREFIX: 'quern',
      QUERN_SYNC_WAIT_DEFAULT_MS: 30_000,
      QUERN_RETAIN_COMPLETED_SECONDS: 86_400,
      QUERN_RETAIN_COMPLETED_COUNT: 10_000,
      QUERN_RETAIN_FAILED_SECONDS: 604_800,
      QUERN_BODY_LIMIT_BYTES: 1_048_576,
    });
    expect(loadConfig({}, 'worker').QUERN_WORKER_THREADS).toBeGreaterThanOrEqual(1);
  });

  it('gives each process a schema of its own, built from shared pieces', () => {
    const api = loadConfig({}, 'api');
    const worker = loadConfig({}, 'worker');
    const cli = loadConfig({}, 'cli');
    // The worker never parses token keys or rate limits; the API never parses thread or lock settings.
    expect('QUERN_JWT_KEYS' in worker).toBe(false);
    expect('QUERN_RATE_FREE_PER_MINUTE' in worker).toBe(false);
    expect('QUERN_WORKER_THREADS' in api).toBe(false);
    expect('QUERN_LOCK_DURATION_MS' in api).toBe(false);
    // The shared pieces agree everywhere.
    for (const config of [api, worker, cli]) {
      expect(config.REDIS_URL).toBe('redis://127.0.0.1:6379');
      expect(config.QUERN_RETAIN_FAILED_SECONDS).toBe(604_800);
    }
    expect('PORT' in cli || 'QUERN_WORKER_PORT' in cli).toBe(false);
    // A variable of another process is not this one's concern, even when it is malformed.
    expect(() => loadConfig({ QUERN_JWT_KEYS: 'k1:short' }, 'worker')).not.toThrow();
    expect(() => loadConfig({ QUERN_WORKER_THREADS: 'many' }, 'api')).not.toThrow();
    expect(() => loadConfig({ QUERN_WORKER_THREADS: 'many' }, 'worker')).toThrow(/QUERN_WORKER_THREADS/);
    // Cross-field checks run where both of their variables are read.
    expect(() => loadConfig({ QUERN_HEARTBEAT_TTL_MS: '1000', QUERN_HEARTBEAT_INTERVAL_MS: '2000' }, 'worker')).toThrow(
      /QUERN_HEARTBEAT_TTL_MS/,
    );
  });

  it('isolates webhook deliveries per principal and per receiver by default; the breaker can be turned off', () => {
    expect(loadConfig({}, 'worker')).toMatchObject({
      QUERN_WEBHOOK_CONCURRENCY: 32,
      QUERN_WEBHOOK_PER_OWNER_CONCURRENCY: 8,
      QUERN_WEBHOOK_BREAKER_FAILURES: 5,
      QUERN_WEBHOOK_BREAKER_OPEN_MS: 30_000,
    });
    expect(loadConfig({ QUERN_WEBHOOK_BREAKER_FAILURES: '0' }, 'worker').QUERN_WEBHOOK_BREAKER_FAILURES).toBe(0);
    expect(() => loadConfig({ QUERN_WEBHOOK_PER_OWNER_CONCURRENCY: '0' }, 'worker')).toThrow(ConfigError);
    expect(() => loadConfig({ QUERN_WEBHOOK_BREAKER_OPEN_MS: '10' }, 'worker')).toThrow(ConfigError);
  });

  it('coerces numbers and lists, and treats empty strings as unset', () => {
    const config = loadConfig({
      PORT: '9000',
      QUERN_CORS_ORIGINS: 'https://a.example, https://b.example',
      LOG_LEVEL: '',
    });
    expect(config.PORT).toBe(9000);
    expect(config.QUERN_CORS_ORIGINS).toEqual(['https://a.example', 'https://b.example']);
    expect(config.LOG_LEVEL).toBe('info');
  });

  it('asks the API, not the worker or the CLI, for token keys and listed CORS origins in production', () => {
    const production = {
      NODE_ENV: 'production',
      QUERN_SECRETS_KEY: 'x'.repeat(40),
      QUERN_CORS_ORIGINS: '*',
    };
    expect(() => loadConfig(production, 'api')).toThrow(
      /QUERN_JWT_KEYS[\s\S]*QUERN_CORS_ORIGINS|QUERN_CORS_ORIGINS[\s\S]*QUERN_JWT_KEYS/,
    );
    expect(loadConfig(production, 'worker').NODE_ENV).toBe('production');
    expect(loadConfig(production, 'cli').NODE_ENV).toBe('production');
    // Everything else binds every process alike.
    expect(() => loadConfig({ NODE_ENV: 'production' }, 'worker')).toThrow(/QUERN_SECRETS_KEY/);
  });

  it('binds to all interfaces by default only in production', () => {
    const production = {
      NODE_ENV: 'production',
      QUERN_JWT_KEYS: 'k1:0123456789abcdef0123456789abcdef',
      QUERN_SECRETS_KEY: '0123456789abcdef0123456789abcdef',
    };
    expect(loadConfig(production).HOST).toBe('0.0.0.0');
    expect(loadConfig({ ...production, HOST: '10.0.0.5' }).HOST).toBe('10.0.0.5');
    expect(() => loadConfig({ ...production, QUERN_SECRETS_KEY: '' })).toThrow(/QUERN_SECRETS_KEY: is required/);
  });

  it('names the variable of a bad value', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/PORT: /);
    expect(() => loadConfig({ REDIS_URL: 'http://x' })).toThrow(/REDIS_URL: must start with redis:\/\//);
    expect(() => loadConfig({ NODE_ENV: 'staging' })).toThrow(/NODE_ENV/);
  });

  it('checks fields against each other', () => {
    expect(() => loadConfig({ QUERN_SYNC_WAIT_DEFAULT_MS: '90000', QUERN_SYNC_WAIT_MAX_MS: '60000' })).toThrow(
      /QUERN_SYNC_WAIT_DEFAULT_MS: must not exceed QUERN_SYNC_WAIT_MAX_MS/,
    );
    expect(() =>
      loadConfig({ NODE_ENV: 'production', QUERN_DEV_API_KEY: 'qk_dev_abcdefghijklmnopqrstuvwxyz' }),
    ).toThrow(/QUERN_DEV_API_KEY: is refused when NODE_ENV=production/);
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(
      /QUERN_JWT_KEYS: is required when NODE_ENV=production/,
    );
    expect(() => loadConfig({ QUERN_JWT_KEYS: 'k1:short' })).toThrow(/QUERN_JWT_KEYS: entry 1 must be kid:secret/);
    expect(() => loadConfig({ QUERN_OIDC_JWKS_URL: 'https://idp.example/jwks' })).toThrow(/QUERN_OIDC_ISSUER/);
  });

  it('takes a plain prefix on Redis Cluster (keys spread), a hash-tagged one (one slot), and refuses stray braces', () => {
    const cluster = { REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2:7000' };
    const refusal = /QUERN_REDIS_PREFIX: letters, digits, _ and -, with at most one hash tag such as \{quern\}/;
    // An empty tag (Redis hashes the whole key then), braces the wrong way round, a lone brace or
    // two tags would put a queue's keys in slots no one meant: refused, by every process.
    for (const prefix of ['q{}', '}quern{', 'qu{ern', '{a}{b}']) {
      for (const role of ['api', 'worker', 'cli'] as const) {
        expect(() => loadConfig({ ...cluster, QUERN_REDIS_PREFIX: prefix }, role), `${prefix} (${role})`).toThrow(
          refusal,
        );
      }
    }
    for (const prefix of ['quern', 'app-eu', '{quern}', 'app{q1}', '{quern}-eu']) {
      const config = loadConfig({ ...cluster, QUERN_REDIS_PREFIX: prefix });
      expect(config.QUERN_REDIS_PREFIX).toBe(prefix);
      expect(config.REDIS_CLUSTER_NODES).toEqual(['10.0.0.1:7000', '10.0.0.2:7000']);
      // A tagged prefix keeps the one-slot layout; a plain one spreads the keys.
      expect(KeySpace.of(config).spread, prefix).toBe(!prefix.includes('{'));
    }
    expect(loadConfig(cluster).QUERN_REDIS_PREFIX).toBe('quern');
    // Without a Cluster the layout stays as it always was, whatever the prefix.
    expect(KeySpace.of(loadConfig({ QUERN_REDIS_PREFIX: 'quern' })).spread).toBe(false);
    // Without Cluster a plain prefix is fine; Cluster and Sentinel together are not.
    expect(loadConfig({ QUERN_REDIS_PREFIX: 'quern' }).QUERN_REDIS_PREFIX).toBe('quern');
    expect(() => loadConfig({ ...cluster, QUERN_REDIS_PREFIX: '{quern}', REDIS_SENTINELS: 's1:26379' })).toThrow(
      /REDIS_SENTINELS: cannot be used with REDIS_CLUSTER_NODES/,
    );
  });

  it('never echoes a secret’s value in an error', () => {
    try {
      loadConfig({ QUERN_DEV_API_KEY: 'short' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain('QUERN_DEV_API_KEY');
      expect((err as Error).message).not.toContain('short"');
    }
  });
});
