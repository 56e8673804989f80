import { afterEach, describe, expect, it, vi } from 'vitest';
import { type BatchModel, type BatchRunner, BatchScheduler, DroppedError } from './batch-scheduler';
import type { BatchOutput } from './inference-pool';

/**
 * A runner whose batches finish when the test says so. Output value = input value × 10 for a
 * one-feature, one-output model, so each row's answer shows which input it came from.
 */
class ManualRunner implements BatchRunner {
  readonly calls: { model: string; rows: number; input: number[]; done: boolean; finish: (fail?: Error) => void }[] =
    [];
  constructor(private threads: number) {}
  idleCount(): number {
    return this.threads - this.calls.filter((c) => !c.done).length;
  }
  run(model: string, rows: number, input: Float32Array): Promise<BatchOutput> {
    return new Promise((resolve, reject) => {
      const values = Array.from(input);
      const call = {
        model,
        rows,
        input: values,
        done: false,
        finish: (fail?: Error) => {
          call.done = true;
          if (fail) reject(fail);
          else resolve({ output: Float32Array.from(values, (v) => v * 10), inferenceMs: 1 });
        },
      };
      this.calls.push(call);
    });
  }
}

const model = (over: Partial<BatchModel> = {}): BatchModel => ({
  name: 'm',
  features: 1,
  outputSize: 1,
  maxBatchSize: 4,
  maxDelayMs: 0,
  ...over,
});

afterEach(() => {
  vi.useRealTimers();
});

describe('BatchScheduler', () => {
  it('runs a lone request at once when a thread is idle (no waiting for a batch to fill)', async () => {
    const runner = new ManualRunner(2);
    const scheduler = new BatchScheduler(runner, [model()]);
    const result = scheduler.submit('m', [[1]]);
    expect(runner.calls).toHaveLength(1);
    expect(runner.calls[0]?.rows).toBe(1);
    runner.calls[0]?.finish();
    await expect(result).resolves.toMatchObject({ batchSize: 1 });
  });

  it('lets owners take turns: a newcomer joins the next batch, not the end of a flooder’s backlog', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model()]);
    // The thread is busy with a first request of A; A then queues 12 more, and B one.
    const done = [scheduler.submit('m', [[0]], { owner: 'A' })];
    for (let i = 1; i <= 12; i++) done.push(scheduler.submit('m', [[i]], { owner: 'A' }));
    done.push(scheduler.submit('m', [[100]], { owner: 'B' }));
    runner.calls[0]?.finish();
    await Promise.resolve();
    // The next batch of 4 holds B's row (input 100), after one of A's.
    expect(runner.calls[1]?.input).toEqual([1, 100, 2, 3]);
    // Without owners, the same requests are taken first come, first served.
    const fifoRunner = new ManualRunner(1);
    const fifo = new BatchScheduler(fifoRunner, [model()]);
    const plain = [fifo.submit('m', [[0]])];
    for (let i = 1; i <= 12; i++) plain.push(fifo.submit('m', [[i]]));
    plain.push(fifo.submit('m', [[100]]));
    fifoRunner.calls[0]?.finish();
    await Promise.resolve();
    expect(fifoRunner.calls[1]?.input).toEqual([1, 2, 3, 4]);
    for (const r of [runner, fifoRunner]) {
      for (let k = 0; k < 5; k++) {
        for (const call of r.calls) if (!call.done) call.finish();
        await Promise.resolve();
      }
    }
    await Promise.all([...done, ...plain]);
  });

  it('gathers rows while every thread is busy and takes up to max_batch_size when one frees', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model({ maxBatchSize: 4 })]);
    const first = scheduler.submit('m', [[1]]);
    const waiting = [2, 3, 4, 5, 6, 7].map((v) => scheduler.submit('m', [[v]]));
    expect(runner.calls).toHaveLength(1);
    expect(scheduler.pendingRows()).toBe(6);

    runner.calls[0]?.finish();
    await first;
    // The freed thread took four gathered rows at once, the rest wait.
    expect(runner.calls).toHaveLength(2);
    expect(runner.calls[1]?.input).toEqual([2, 3, 4, 5]);
    runner.calls[1]?.finish();
    await Promise.all(waiting.slice(0, 4));
    expect(runner.calls[2]?.input).toEqual([6, 7]);
    runner.calls[2]?.finish();
    const results = await Promise.all(waiting);
    expect(results.map((r) => Array.from(r.output))).toEqual([[20], [30], [40], [50], [60], [70]]);
    expect(results.map((r) => r.batchSize)).toEqual([4, 4, 4, 4, 2, 2]);
  });

  it('splits a request larger than max_batch_size over batches and keeps row order', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model({ maxBatchSize: 3 })]);
    const big = scheduler.submit('m', [[1], [2], [3], [4], [5], [6], [7]]);
    expect(runner.calls[0]?.input).toEqual([1, 2, 3]);
    runner.calls[0]?.finish();
    await vi.waitFor(() => expect(runner.calls).toHaveLength(2));
    runner.calls[1]?.finish();
    await vi.waitFor(() => expect(runner.calls).toHaveLength(3));
    expect(runner.calls[2]?.input).toEqual([7]);
    runner.calls[2]?.finish();
    const result = await big;
    expect(Array.from(result.output)).toEqual([10, 20, 30, 40, 50, 60, 70]);
  });

  it('with max_delay_ms waits for a fuller batch, but never longer than the delay', async () => {
    vi.useFakeTimers();
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model({ maxBatchSize: 4, maxDelayMs: 5 })]);
    void scheduler.submit('m', [[1]]);
    expect(runner.calls).toHaveLength(0);
    vi.advanceTimersByTime(2);
    void scheduler.submit('m', [[2]]);
    expect(runner.calls).toHaveLength(0);
    vi.advanceTimersByTime(3);
    expect(runner.calls).toHaveLength(1);
    expect(runner.calls[0]?.input).toEqual([1, 2]);
  });

  it('with max_delay_ms runs a full batch without waiting', () => {
    vi.useFakeTimers();
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model({ maxBatchSize: 2, maxDelayMs: 1000 })]);
    void scheduler.submit('m', [[1]]);
    void scheduler.submit('m', [[2]]);
    expect(runner.calls).toHaveLength(1);
    expect(runner.calls[0]?.rows).toBe(2);
  });

  it('drops a request whose shouldDrop gives a reason before its batch runs', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model()]);
    const running = scheduler.submit('m', [[1]]);
    let canceled = false;
    const dropped = scheduler.submit('m', [[2]], { shouldDrop: () => (canceled ? 'canceled by the client' : null) });
    const kept = scheduler.submit('m', [[3]]);
    canceled = true;
    runner.calls[0]?.finish();
    await running;
    await expect(dropped).rejects.toBeInstanceOf(DroppedError);
    expect(runner.calls[1]?.input).toEqual([3]);
    runner.calls[1]?.finish();
    await expect(kept).resolves.toBeDefined();
  });

  it('cancels a pending request by id at once, but not one whose batch started', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model()]);
    let started = 0;
    const running = scheduler.submit('m', [[1]], { id: 'a', onStart: () => started++ });
    const waiting = scheduler.submit('m', [[2]], { id: 'b', onStart: () => started++ });
    expect(started).toBe(1);
    expect(scheduler.cancel('a')).toBe(false);
    expect(scheduler.cancel('b')).toBe(true);
    await expect(waiting).rejects.toBeInstanceOf(DroppedError);
    expect(scheduler.pendingRows()).toBe(0);
    runner.calls[0]?.finish();
    await expect(running).resolves.toBeDefined();
    expect(runner.calls).toHaveLength(1);
    expect(scheduler.cancel('b')).toBe(false);
  });

  it('rejects every request of a failed batch and goes on with the next', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model()]);
    const a = scheduler.submit('m', [[1]]);
    const b = scheduler.submit('m', [[2]]);
    const c = scheduler.submit('m', [[3]]);
    runner.calls[0]?.finish(new Error('thread died'));
    await expect(a).rejects.toThrow('thread died');
    runner.calls[1]?.finish(new Error('boom'));
    await expect(b).rejects.toThrow('boom');
    await expect(c).rejects.toThrow('boom');
  });

  it('gives a free thread to the model whose oldest row has waited longest', async () => {
    const runner = new ManualRunner(1);
    const scheduler = new BatchScheduler(runner, [model({ name: 'a' }), model({ name: 'b' })]);
    const first = scheduler.submit('a', [[1]]);
    void scheduler.submit('b', [[2]]);
    void scheduler.submit('a', [[3]]);
    runner.calls[0]?.finish();
    await first;
    expect(runner.calls[1]?.model).toBe('b');
  });

  it('refuses rows of the wrong width and unknown models', async () => {
    const scheduler = new BatchScheduler(new ManualRunner(1), [model({ features: 2 })]);
    await expect(scheduler.submit('m', [[1]])).rejects.toThrow('expected 2 features');
    await expect(scheduler.submit('nope', [[1, 2]])).rejects.toThrow('not served');
  });
});
