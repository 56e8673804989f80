import { describe, expect, it } from 'vitest';
import { isPretty, listenFailure, readableLogLines } from './log-format';

const ACCESS = JSON.stringify({
  level: 'info',
  time: '2026-11-30T02:02:00.226Z',
  service: 'api',
  request_id: 'req_uVuSlhw1H7KSaaQhi0fcJU',
  method: 'POST',
  route: '/v1/predict',
  status: 503,
  duration_ms: 10.022,
  key_prefix: 'qk_a5YWUGvX',
  msg: 'request',
});

describe('LOG_FORMAT', () => {
  it('auto is pretty at a terminal only; json and pretty are what they say', () => {
    expect(isPretty('auto', true)).toBe(true);
    expect(isPretty('auto', false)).toBe(false);
    expect(isPretty('auto', undefined)).toBe(false);
    expect(isPretty('json', true)).toBe(false);
    expect(isPretty('pretty', false)).toBe(true);
  });

  it('an access line becomes one line: service, method, route, status, duration, then the rest', () => {
    const line = readableLogLines(false)(ACCESS);
    expect(line).not.toContain('\n');
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: \[api\] POST \/v1\/predict 503 10\.022 ms /);
    expect(line).toContain('"request_id":"req_uVuSlhw1H7KSaaQhi0fcJU"');
    expect(line).not.toContain('"route"');
  });

  it('colours the level and the message when asked, and only then', () => {
    const line = readableLogLines(true)(ACCESS);
    const esc = '\x1b';
    expect(line).toContain(`${esc}[32mINFO${esc}[39m: ${esc}[36m[api] POST`);
    expect(readableLogLines(false)(ACCESS)).not.toContain('\x1b');
  });

  it('other lines keep their fields; lines that are not JSON pass unchanged', () => {
    const readable = readableLogLines(false);
    const line = readable(
      JSON.stringify({ level: 'warn', time: '2026-11-30T02:02:00.226Z', service: 'worker', model: 'm', msg: 'slow' }),
    );
    expect(line).toMatch(/WARN: \[worker\] slow \{"model":"m"\}$/);
    expect(readable('[quern] stopped')).toBe('[quern] stopped');
    expect(readable('{not json')).toBe('{not json');
  });

  it('an address in use names the variable to set', () => {
    const inUse = Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE' });
    expect(listenFailure(inUse, 'PORT', 8000)[1]).toBe('port 8000 is already in use: set PORT to a free port (PORT=…)');
    expect(listenFailure(new Error('denied'), 'PORT', 80)).toEqual([{ err: 'denied', port: 80 }, 'cannot listen']);
  });
});
