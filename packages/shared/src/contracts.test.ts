import { describe, expect, it } from 'vitest';
import { decodeCachedRow, decodeCanceledRecord, encodeCachedRow } from './contracts';

describe('formats exchanged through Redis', () => {
  it('a cached row reads back as written; a corrupt or wrong-sized entry is a miss', () => {
    expect(decodeCachedRow(encodeCachedRow([1.5, -2]), 2)).toEqual([1.5, -2]);
    expect(decodeCachedRow(encodeCachedRow([1.5, -2]), 3)).toBeNull();
    expect(decodeCachedRow('{"a":1}', 1)).toBeNull();
    expect(decodeCachedRow('[1,"x"]', 2)).toBeNull();
    expect(decodeCachedRow('not json', 1)).toBeNull();
    expect(decodeCachedRow(null, 1)).toBeNull();
  });

  it('a canceled record is validated, not cast: one that does not parse is absent', () => {
    expect(decodeCanceledRecord('{"id":"job_x","timestamp":1}')).toBeUndefined();
    expect(decodeCanceledRecord('nonsense')).toBeUndefined();
    const data = {
      v: 1,
      model: 'cars-mpg',
      model_version: '1.0.0',
      rows: [[1, 2, 3, 4, 5, 6]],
      mode: 'async',
      owner: 'key_a',
      request_id: 'req_a',
      created_at: 1,
      deadline_at: 2,
      priority: 1,
    };
    const record = { id: 'job_x', data, timestamp: 1, canceled_at: 3 };
    expect(decodeCanceledRecord(JSON.stringify(record))).toEqual(record);
  });
});
