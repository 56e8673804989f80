import { describe, expect, it } from 'vitest';
import { isRedisUnavailable, toQuernError } from './errors';

describe('isRedisUnavailable', () => {
  it('takes a Cluster failover’s redirections, single or looping, as an outage (503), not a fault (500)', () => {
    const looping = new Error('Too many Cluster redirections. Last error: ReplyError: MOVED 9225 127.0.0.1:43229');
    expect(isRedisUnavailable(looping)).toBe(true);
    expect(isRedisUnavailable(new Error('MOVED 9225 127.0.0.1:43229'))).toBe(true);
    expect(toQuernError(looping).status).toBe(503);
    // A pipeline refused while the client's slot map is half updated.
    const split = new Error('All keys in the pipeline should belong to the same slots allocation group');
    expect(toQuernError(split).status).toBe(503);
    // Other errors stay internal.
    expect(isRedisUnavailable(new Error('Too many redirects'))).toBe(false);
    expect(toQuernError(new Error('something else')).status).toBe(500);
  });
});
