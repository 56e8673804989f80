import { describe, expect, it } from 'vitest';
import { apiKeyPrefix, isId, newApiKey, newId } from './ids';

describe('ids', () => {
  it('makes prefixed base62 ids that differ every time', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newId('job')));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(isId('job', id)).toBe(true);
  });

  it('makes API keys of qk_ + 32 random bytes in base62, with a short public prefix', () => {
    const { key, prefix } = newApiKey();
    expect(key).toMatch(/^qk_[0-9A-Za-z]{43}$/);
    expect(prefix).toBe(key.slice(0, 11));
    expect(apiKeyPrefix(key)).toBe(prefix);
    expect(newApiKey().key).not.toBe(key);
  });
});
