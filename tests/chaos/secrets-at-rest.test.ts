import { OTHER_API_KEY, TEST_API_KEY, TEST_JWT_KEYS } from '@quern/devkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';
import { WebhookReceiver } from '../support/webhook-receiver';
import { report } from './support/harness';

const SECRETS_KEY = 'chaos-secrets-key-0123456789abcdefghijklmnop';
let stack: Stack;
let receiver: WebhookReceiver;

beforeAll(async () => {
  receiver = await WebhookReceiver.start();
  stack = await startStack({
    QUERN_SECRETS_KEY: SECRETS_KEY,
    QUERN_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${receiver.port}`,
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

/** Every value of every key in Redis, as text. */
async function dumpRedis(client: Redis): Promise<string> {
  const parts: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      parts.push(key);
      const type = await client.type(key);
      if (type === 'string') parts.push((await client.getBuffer(key))?.toString('latin1') ?? '');
      else if (type === 'hash') parts.push(JSON.stringify(await client.hgetall(key)));
      else if (type === 'list') parts.push(JSON.stringify(await client.lrange(key, 0, -1)));
      else if (type === 'set') parts.push(JSON.stringify(await client.smembers(key)));
      else if (type === 'zset') parts.push(JSON.stringify(await client.zrange(key, '0', '-1')));
      else if (type === 'stream') parts.push(JSON.stringify(await client.xrange(key, '-', '+')));
    }
  } while (cursor !== '0');
  return parts.join('\n');
}

describe('abuse 11: no credential or secret in clear in Redis', () => {
  it('after keys, tokens, webhook secrets (rotated) and webhook deliveries, a scan of every key finds none of them', async () => {
    const created = (await (
      await stack.post('/v1/admin/keys', { name: 'scan', tier: 'free', scopes: ['predict', 'jobs:read'] })
    ).json()) as { key: string };
    const token = (
      (await (await stack.post('/v1/auth/token', {})).json()) as {
        access_token: string;
      }
    ).access_token;
    const first = ((await (await stack.get('/v1/webhooks/secret')).json()) as { secret: string }).secret;
    const second = ((await (await stack.post('/v1/webhooks/secret/rotate', {})).json()) as { secret: string }).secret;
    const credentials: Record<string, string>[] = [{ 'x-api-key': created.key }, { authorization: `Bearer ${token}` }];
    for (const auth of credentials) {
      const res = await stack.post(
        '/v1/jobs',
        {
          features: [4, 140, 90, 2264, 15.5, 1971],
          webhook: { url: receiver.url(), events: ['started', 'completed'] },
        },
        auth,
      );
      expect(res.status).toBe(202);
    }
    await receiver.waitFor(4);
    // One more request with the header a log or a job could have copied.
    await stack.get('/v1/jobs/job_0000000000000000000000', OTHER_API_KEY);

    const client = new Redis(stack.redis.url);
    const everything = await dumpRedis(client);
    client.disconnect();
    const secrets = {
      'test API key': TEST_API_KEY,
      'other API key': OTHER_API_KEY,
      'created API key': created.key,
      'access token': token,
      'access token signature': token.split('.')[2] as string,
      'webhook secret': first,
      'webhook secret (bytes)': first.slice('whsec_'.length),
      'rotated webhook secret': second,
      'rotated webhook secret (bytes)': second.slice('whsec_'.length),
      'JWT signing secret': TEST_JWT_KEYS.split(',')[0]?.split(':')[1] as string,
      'secrets key': SECRETS_KEY,
    };
    const found = Object.entries(secrets)
      .filter(([, value]) => everything.includes(value))
      .map(([name]) => name);
    report('abuse-11-redis-scan', {
      bytes_scanned: everything.length,
      secrets_checked: Object.keys(secrets).length,
      secrets_found: found.length,
    });
    expect(everything.length).toBeGreaterThan(10_000);
    // The scan did see the jobs and the sealed secret, just not in clear.
    expect(everything).toMatch(/whsec:key_/);
    expect(found).toEqual([]);
  });
});
