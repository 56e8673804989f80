import calculateSlot from 'cluster-key-slot';
import { describe, expect, it } from 'vitest';
import { KeySpace, partitionOf } from './keys';

/** The key BullMQ 6 builds for a queue's `type` (`prefix:queueName:type`). */
const bullKey = (prefix: string, queue: string, type: string) => `${prefix}:${queue}:${type}`;

describe('KeySpace', () => {
  it('keeps every name as it was without a Cluster, or with a tagged prefix', () => {
    for (const keys of [new KeySpace('quern'), new KeySpace('{quern}', { cluster: true })]) {
      const p = keys.prefix;
      expect(keys.spread).toBe(false);
      expect(keys.inferenceQueue('cars-mpg')).toBe('infer-cars-mpg');
      expect(keys.webhookQueue()).toBe('webhooks');
      expect(keys.queueAdmissions('cars-mpg')).toBe(`${p}:admit:cars-mpg`);
      expect(keys.fairShare('cars-mpg')).toBe(`${p}:fair:cars-mpg`);
      expect(keys.keyRows('key_a')).toBe(`${p}:rows:key_a`);
      expect(keys.ownerJobs('key_a')).toBe(`${p}:jobs:key_a`);
      expect(keys.usage('key_a', 7)).toBe(`${p}:usage:key_a:7`);
      // Partitions beyond the first get names of their own.
      expect(keys.inferenceQueue('cars-mpg', 2)).toBe('infer-cars-mpg.2');
      expect(keys.fairShare('cars-mpg', 2)).toBe(`${p}:fair:cars-mpg.2`);
    }
    // A tagged prefix: every key in one slot, as before.
    const tagged = new KeySpace('{quern}', { cluster: true });
    const slots = new Set(
      [
        bullKey(tagged.prefix, tagged.inferenceQueue('m', 1), 'wait'),
        tagged.keyRows('key_a'),
        tagged.cache('m', '1', 'abc'),
        tagged.workers(),
      ].map((k) => calculateSlot(k)),
    );
    expect(slots.size).toBe(1);
  });

  it('spread: a queue’s keys share its slot, a principal’s keys theirs, and the rest spreads', () => {
    const keys = new KeySpace('quern', { cluster: true, partitions: (model) => (model === 'cars-mpg' ? 3 : 1) });
    expect(keys.spread).toBe(true);
    expect(keys.inferenceQueue('mlp-large')).toBe('{infer-mlp-large}');
    const queueSlots = [0, 1, 2].map((p) => {
      const name = keys.inferenceQueue('cars-mpg', p);
      const slots = new Set(
        [
          bullKey(keys.prefix, name, 'wait'),
          bullKey(keys.prefix, name, 'prioritized'),
          bullKey(keys.prefix, name, 'job_123'),
          keys.queueAdmissions('cars-mpg', p),
          keys.fairShare('cars-mpg', p),
        ].map((k) => calculateSlot(k)),
      );
      expect(slots.size).toBe(1);
      return [...slots][0];
    });
    // Partition p of 3 in the middle of the p-th third of the slots: on three masters holding
    // equal ranges (as redis-cli --cluster create splits them), one partition each.
    queueSlots.forEach((slot, p) => {
      expect(Math.floor(((slot as number) * 3) / 16_384), `partition ${p} slot ${slot}`).toBe(p);
    });
    const owner = new Set(
      [keys.keyRows('key_a'), keys.keyRowsExpiry('key_a'), keys.ownerJobs('key_a'), keys.usage('key_a', 9)].map((k) =>
        calculateSlot(k),
      ),
    );
    expect(owner.size).toBe(1);
    expect(calculateSlot(bullKey(keys.prefix, keys.webhookQueue(), 'wait'))).toBe(
      calculateSlot(bullKey(keys.prefix, keys.webhookQueue(), 'meta')),
    );
    // Per-request keys are not tied to any one slot: 200 cache keys land on many.
    const cacheSlots = new Set(Array.from({ length: 200 }, (_, i) => calculateSlot(keys.cache('m', '1', `h${i}`))));
    expect(cacheSlots.size).toBeGreaterThan(150);
  });
});

describe('partitionOf', () => {
  it('is stable per id, within range, and spreads ids evenly', () => {
    expect(partitionOf('job_x', 1)).toBe(0);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3_000; i++) {
      const id = `job_${i.toString(36)}abcdefghij`;
      const p = partitionOf(id, 3);
      expect(p).toBe(partitionOf(id, 3));
      counts[p] = (counts[p] ?? 0) + 1;
    }
    for (const n of counts) expect(n).toBeGreaterThan(850);
  });
});
