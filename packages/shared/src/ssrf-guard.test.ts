import type { LookupAddress } from 'node:dns';
import { describe, expect, it } from 'vitest';
import { checkWebhookUrl, guardedLookup, isPublicAddress, type Resolver, resolvePublic } from './ssrf-guard';

const open = { allowHttp: true, allowHosts: [] };

describe('isPublicAddress', () => {
  it.each([
    '127.0.0.1',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:10.1.2.3',
    '0.0.0.0',
    '::',
    '169.254.169.254',
    '10.0.0.1',
    '172.16.0.1',
    '192.168.1.1',
    '100.64.0.1',
    'fc00::1',
    'fe80::1',
    '224.0.0.1',
    '255.255.255.255',
    '2002:7f00:1::1',
    'not an address',
  ])('refuses %s', (address) => {
    expect(isPublicAddress(address)).toBe(false);
  });
  it.each(['8.8.8.8', '93.184.216.34', '2001:4860:4860::8888', '::ffff:8.8.8.8'])('accepts %s', (address) => {
    expect(isPublicAddress(address)).toBe(true);
  });
});

describe('checkWebhookUrl', () => {
  it.each([
    'http://127.0.0.1/hook',
    'http://[::1]/hook',
    'http://[::ffff:127.0.0.1]/hook',
    'http://0.0.0.0/hook',
    'http://169.254.169.254/latest/meta-data',
    'http://10.0.0.1/',
    'http://172.16.0.1/',
    'http://192.168.1.1/',
    'http://100.64.0.1/',
    'http://[fc00::1]/',
    'http://2130706433/',
    'http://0177.0.0.1/',
    'http://0x7f.0.0.1/',
  ])('refuses %s from the URL alone', (url) => {
    expect(checkWebhookUrl(url, open)).toMatchObject({ ok: false, reason: 'points to a non-public address' });
  });

  it('refuses other schemes, plain http when not allowed, and credentials in the URL', () => {
    expect(checkWebhookUrl('ftp://example.com/x', open)).toMatchObject({ ok: false, reason: 'must use http or https' });
    expect(checkWebhookUrl('file:///etc/passwd', open).ok).toBe(false);
    expect(checkWebhookUrl('http://example.com/x', { allowHttp: false, allowHosts: [] })).toMatchObject({
      ok: false,
      reason: 'must use https',
    });
    expect(checkWebhookUrl('https://user:pw@example.com/x', open)).toMatchObject({ ok: false });
    expect(checkWebhookUrl('not a url', open).ok).toBe(false);
  });

  it('leaves host names to be resolved, and lets allow-listed hosts (with their port) through', () => {
    expect(checkWebhookUrl('https://hooks.example.com/x', open)).toMatchObject({ ok: true, needsResolve: true });
    const policy = { allowHttp: true, allowHosts: ['127.0.0.1:9999', 'receiver.internal'] };
    expect(checkWebhookUrl('http://127.0.0.1:9999/x', policy)).toMatchObject({ ok: true, allowListed: true });
    expect(checkWebhookUrl('http://127.0.0.1:9998/x', policy).ok).toBe(false);
    expect(checkWebhookUrl('http://2130706433:9998/x', policy).ok).toBe(false);
    expect(checkWebhookUrl('http://receiver.internal/x', policy)).toMatchObject({ ok: true, needsResolve: false });
  });
});

/** A resolver that answers from a script: one answer per call, like a DNS server that changes its mind. */
function scripted(...answers: string[][]): Resolver {
  let call = 0;
  return (_host, _options, callback) => {
    const addresses = answers[Math.min(call++, answers.length - 1)] ?? [];
    callback(
      null,
      addresses.map((address): LookupAddress => ({ address, family: address.includes(':') ? 6 : 4 })),
    );
  };
}

function lookup(guard: ReturnType<typeof guardedLookup>, all: boolean) {
  return new Promise<{ err: NodeJS.ErrnoException | null; address: unknown }>((resolve) =>
    guard('hooks.example.com', { all }, (err, address) => resolve({ err, address })),
  );
}

describe('resolution checks', () => {
  it('refuses a name whose every or any address is private', async () => {
    expect((await resolvePublic('x', scripted(['10.0.0.5']))).ok).toBe(false);
    expect((await resolvePublic('x', scripted(['93.184.216.34', '127.0.0.1']))).ok).toBe(false);
    expect((await resolvePublic('x', scripted(['93.184.216.34']))).ok).toBe(true);
  });

  it('checks again at connect time, so DNS rebinding (public when checked, loopback when used) is refused', async () => {
    const resolver = scripted(['93.184.216.34'], ['127.0.0.1']);
    expect((await resolvePublic('hooks.example.com', resolver)).ok).toBe(true);
    const { err } = await lookup(guardedLookup(false, resolver), true);
    expect(err?.code).toBe('ESSRF');
  });

  it('gives the socket the checked addresses, in both lookup forms', async () => {
    const all = await lookup(guardedLookup(false, scripted(['93.184.216.34'])), true);
    expect(all.err).toBeNull();
    expect(all.address).toEqual([{ address: '93.184.216.34', family: 4 }]);
    const one = await lookup(guardedLookup(false, scripted(['93.184.216.34'])), false);
    expect(one.address).toBe('93.184.216.34');
    // An allow-listed receiver may be private.
    expect((await lookup(guardedLookup(true, scripted(['10.0.0.5'])), false)).err).toBeNull();
  });
});
