import { describe, expect, it } from 'vitest';
import { TurnBuffer } from './turn-buffer';

describe('TurnBuffer', () => {
  it('hands over everything pushed before its flush in one call', async () => {
    for (const when of ['tick', 'turn'] as const) {
      const flushed: number[][] = [];
      const buffer = new TurnBuffer<number>((items) => flushed.push(items), when);
      buffer.push(1);
      buffer.push(2);
      await Promise.resolve();
      buffer.push(3);
      expect(flushed).toEqual([]);
      await new Promise((r) => setImmediate(r));
      expect(flushed).toEqual([[1, 2, 3]]);
    }
  });

  it('tick flushes before the next turn of the event loop, turn only at it', async () => {
    const order: string[] = [];
    const tick = new TurnBuffer<string>(() => order.push('tick'), 'tick');
    const turn = new TurnBuffer<string>(() => order.push('turn'), 'turn');
    setImmediate(() => order.push('immediate'));
    turn.push('a');
    tick.push('a');
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual(['tick', 'immediate', 'turn']);
  });

  it('flushes at once at max items, and on flush()', () => {
    const flushed: number[][] = [];
    const buffer = new TurnBuffer<number>((items) => flushed.push(items), 'turn', 2);
    buffer.push(1);
    buffer.push(2);
    expect(flushed).toEqual([[1, 2]]);
    buffer.push(3);
    buffer.flush();
    expect(flushed).toEqual([[1, 2], [3]]);
    buffer.flush();
    expect(flushed).toHaveLength(2);
  });
});
