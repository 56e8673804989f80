import { describe, expect, it } from 'vitest';
import { decodeFailure, encodeFailure, FAILURE_KINDS, overflowFailure } from './job-failure';

describe('job failures as data', () => {
  it('reads back what it writes, row included', () => {
    const failure = overflowFailure(3);
    expect(decodeFailure(encodeFailure(failure))).toEqual(failure);
    expect(failure).toMatchObject({ code: 'invalid_input', row: 3 });
  });

  it('reads the failed reasons of older versions and of BullMQ itself', () => {
    expect(decodeFailure('deadline_exceeded: the job was still queued at its deadline')).toEqual({
      code: 'deadline_exceeded',
      message: 'the job was still queued at its deadline',
    });
    expect(decodeFailure('job stalled more than allowable limit').code).toBe('worker_lost');
  });

  it('never shows an unknown text: a stack, a driver message or a malformed record is an internal error', () => {
    for (const reason of [
      'TypeError: cannot read x\n    at foo (/app/x.js:1:1)',
      '{"code":"not_a_code","message":"x"}',
      '{"code":"canceled"}',
      '{not json',
      undefined,
    ]) {
      expect(decodeFailure(reason)).toEqual({
        code: 'internal_error',
        message: 'the job failed because of an internal error',
      });
    }
  });

  it('maps each code to one job status and one problem', () => {
    expect(FAILURE_KINDS.canceled).toEqual({ status: 'canceled', problem: 'job_canceled' });
    expect(FAILURE_KINDS.deadline_exceeded).toEqual({ status: 'expired', problem: 'job_expired' });
    expect(FAILURE_KINDS.invalid_input).toEqual({ status: 'failed', problem: 'validation_failed' });
    expect(FAILURE_KINDS.worker_lost).toEqual({ status: 'failed', problem: 'inference_failed' });
  });
});
