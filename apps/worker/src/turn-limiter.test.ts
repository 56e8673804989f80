import { describe, expect, it } from 'vitest';
import { TurnLimiter } from './turn-limiter';

describe('TurnLimiter', () => {
  it('lets timers run between groups of callers', async () => {
    const limiter = new TurnLimiter(10);
    const order: string[] = [];
    const timer = new Promise<void>((resolve) =>
      setTimeout(() => {
        order.push('timer');
        resolve();
      }, 0),
    );
    const callers = Array.from({ length: 35 }, (_, i) =>
      limiter.pass().then(() => {
        // Each caller works a little, so the timer is due before the next turn.
        const until = performance.now() + 0.3;
        while (performance.now() < until);
        order.push(`job${i}`);
      }),
    );
    await Promise.all([...callers, timer]);
    // The first ten pass at once; the timer runs before the last group.
    expect(order.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `job${i}`));
    expect(order.indexOf('timer')).toBeGreaterThan(9);
    expect(order.indexOf('timer')).toBeLessThan(order.indexOf('job34'));
    expect(order.filter((o) => o.startsWith('job'))).toHaveLength(35);
  });

  it('keeps the callers in order', async () => {
    const limiter = new TurnLimiter(3);
    const seen: number[] = [];
    await Promise.all(Array.from({ length: 20 }, (_, i) => limiter.pass().then(() => seen.push(i))));
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });
});
