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

  // Every IPv6 form that carries an IPv4 address is judged by the IPv4 address(es) inside it.
  it.each([
    ['IPv4-compatible, loopback', '::127.0.0.1'],
    ['IPv4-compatible, as the URL parser writes it', '::7f00:1'],
    ['IPv4-compatible, cloud metadata', '::a9fe:a9fe'],
    ['IPv4-compatible, private', '::a00:1'],
    ['IPv4-mapped, hex', '::ffff:7f00:1'],
    ['IPv4-translated (SIIT)', '::ffff:0:7f00:1'],
    ['NAT64 well-known prefix', '64:ff9b::a9fe:a9fe'],
    // The local-use prefix's layout is the operator's choice, so it is refused whatever it holds.
    ['NAT64 local-use prefix, private', '64:ff9b:1::a00:1'],
    ['NAT64 local-use prefix, public in the /96 layout', '64:ff9b:1::808:808'],
    ['6to4 of metadata', '2002:a9fe:a9fe::1'],
    ['6to4 of private', '2002:c0a8:101:1::1'],
    // Teredo: server in bits 32–63, client XORed with 0xffffffff in the last 32 bits.
    ['Teredo, loopback client', '2001:0:808:808:0:0:80ff:fffe'],
    ['Teredo, private server', '2001:0:a00:1:0:0:f7f7:f7f7'],
  ])('refuses %s (%s)', (_form, address) => {
    expect(isPublicAddress(address)).toBe(false);
  });
  it.each([
    ['IPv4-compatible', '::8.8.8.8'],
    ['NAT64 (what DNS64 answers on an IPv6-only network)', '64:ff9b::5db8:d822'],
    ['6to4', '2002:808:808::1'],
    ['Teredo', '2001:0:808:808:0:0:f7f7:f7f7'],
  ])('accepts %s of a public address (%s)', (_form, address) => {
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
    'http://[::127.0.0.1]:8080/hook',
    'http://[::a9fe:a9fe]/latest/meta-data',
    'http://[::a00:1]/',
    'http://[::ffff:0:127.0.0.1]/',
    'http://[64:ff9b::127.0.0.1]/',
    'http://[2002:7f00:1::1]/',
    'http://[2001:0:808:808::80ff:fffe]/',
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

  it('refuses at connect time a name resolving to an IPv6 form of a private IPv4 address', async () => {
    for (const address of ['::7f00:1', '64:ff9b::a9fe:a9fe', '2002:a00:1::1', '2001:0:808:808::80ff:fffe']) {
      expect((await resolvePublic('x', scripted([address]))).ok).toBe(false);
      expect((await lookup(guardedLookup(false, scripted([address])), false)).err?.code).toBe('ESSRF');
    }
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
