import type { Row, SpanContext } from '@quern/shared';
import type { BatchOutput } from './inference-pool';

/** What the scheduler needs of the inference pool; an interface so the scheduler is testable alone. */
export interface BatchRunner {
  idleCount(): number;
  run(model: string, rows: number, input: Float32Array): Promise<BatchOutput>;
}

export interface BatchModel {
  name: string;
  features: number;
  outputSize: number;
  maxBatchSize: number;
  maxDelayMs: number;
}

export interface BatchResult {
  /** `rows × outputSize` values for this request's rows, in order. */
  output: Float32Array;
  /** Rows in the (largest) batch this request's rows ran in. */
  batchSize: number;
  inferenceMs: number;
  /** Epoch ms when the first of its batches started. */
  startedAt: number;
}

export interface BatchStats {
  model: string;
  rows: number;
  requests: number;
  inferenceMs: number;
}

/** Thrown for a request removed before its batch ran (canceled, past its deadline). */
export class DroppedError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'DroppedError';
  }
}

export interface SubmitOptions {
  /** Lets `cancel(id)` find the request. */
  id?: string;
  /** Checked just before the rows go into a batch; a reason drops the request. */
  shouldDrop?: () => string | null;
  /** Called once, when the first of the request's batches starts. */
  onStart?: (startedAt: number) => void;
  /** The span of the request's job (tracing on): each batch it joins links to it. */
  trace?: SpanContext | undefined;
  /** Whose request it is: pending requests of different owners take turns (one lane when absent). */
  owner?: string | undefined;
  /** The owner's fair-share weight (1 when absent): a weight of 2 gets twice the rows of 1 while both wait. */
  weight?: number | undefined;
}

interface Request {
  id: string | undefined;
  owner: string;
  weight: number;
  onStart: ((startedAt: number) => void) | undefined;
  trace: SpanContext | undefined;
  model: BatchModel;
  rows: readonly Row[];
  enqueuedAt: number;
  shouldDrop: (() => string | null) | undefined;
  output: Float32Array;
  taken: number;
  done: number;
  batchSize: number;
  inferenceMs: number;
  startedAt: number;
  failed: boolean;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

/** FIFO with O(1) push and shift; array `shift()` is O(n) and pending queues can be long. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  shift(): T | undefined {
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

/**
 * Pending requests of one model, one FIFO per owner, shared by weight: stride scheduling (the
 * worker's side of the queue's start-time fair queuing, docs/scheduling.md). Each owner's lane
 * has a pass; the next request is the head of the lane with the lowest pass, and taking a
 * request adds its rows divided by the owner's weight to that pass. A lane that appears starts
 * at the pass of the lane served last, so a newcomer's request goes into the next batch, while a
 * key that had many jobs prefetched cannot fill every batch until they run out.
 */
class OwnerTurns {
  private readonly lanes = new Map<string, { fifo: Fifo<Request>; pass: number }>();
  private now = 0;
  private current: { fifo: Fifo<Request>; pass: number } | undefined;

  push(req: Request): void {
    let lane = this.lanes.get(req.owner);
    if (!lane) {
      lane = { fifo: new Fifo(), pass: this.now };
      this.lanes.set(req.owner, lane);
      this.current = undefined;
    }
    lane.fifo.push(req);
  }

  private lane(): { fifo: Fifo<Request>; pass: number } | undefined {
    if (this.current) return this.current;
    for (const lane of this.lanes.values()) {
      if (!this.current || lane.pass < this.current.pass) this.current = lane;
    }
    return this.current;
  }

  peek(): Request | undefined {
    return this.lane()?.fifo.peek();
  }

  shift(): Request | undefined {
    const lane = this.lane();
    if (!lane) return undefined;
    const req = lane.fifo.shift() as Request;
    this.now = lane.pass;
    lane.pass += req.rows.length / req.weight;
    if (lane.fifo.length === 0) this.lanes.delete(req.owner);
    this.current = undefined;
    return req;
  }
}

interface ModelQueue {
  model: BatchModel;
  pending: OwnerTurns;
  pendingRows: number;
}

/**
 * Dynamic batching across models on one shared pool of inference threads.
 *
 * Whenever a thread is free, the model whose next pending request has waited longest gets the
 * thread and takes up to `maxBatchSize` rows at once; within a model, the requests of different
 * owners take turns (`OwnerTurns`). Nothing waits while a thread is idle,
 * except up to `maxDelayMs` (when a model sets it above 0) to gather a fuller batch. While all
 * threads are busy, rows gather, so batch size grows with load by itself. A request with more
 * rows than `maxBatchSize` is split over several batches.
 */
export class BatchScheduler {
  private readonly queues = new Map<string, ModelQueue>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private inFlight = 0;
  /** Batches running per model. */
  private readonly running = new Map<string, number>();
  private readonly byId = new Map<string, { req: Request; queue: ModelQueue }>();

  constructor(
    private readonly runner: BatchRunner,
    models: BatchModel[],
    private readonly hooks: {
      onBatch?: (stats: BatchStats) => void;
      /** Tracing on: each batch with the spans of the jobs in it (see JobTracer.batch). */
      onTracedBatch?: (batch: { model: string; rows: number; startedAt: number; jobs: SpanContext[] }) => void;
    } = {},
  ) {
    for (const model of models) this.queues.set(model.name, { model, pending: new OwnerTurns(), pendingRows: 0 });
  }

  /** Rows waiting for a thread, over all models. */
  /** Starts batching a model loaded at run time (a new version): its rows never share a batch with another's. */
  addModel(model: BatchModel): void {
    if (!this.queues.has(model.name)) {
      this.queues.set(model.name, { model, pending: new OwnerTurns(), pendingRows: 0 });
    }
  }

  /** Rows of `name` waiting for a thread or in a running batch: a version is released only at 0. */
  modelBusy(name: string): boolean {
    return (this.queues.get(name)?.pendingRows ?? 0) > 0 || (this.running.get(name) ?? 0) > 0;
  }

  /** Stops batching a model; call only when `modelBusy` is false. */
  removeModel(name: string): void {
    this.queues.delete(name);
  }

  pendingRows(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.pendingRows;
    return n;
  }

  /** Batches currently running. */
  runningBatches(): number {
    return this.inFlight;
  }

  submit(modelName: string, rows: readonly Row[], options: SubmitOptions = {}): Promise<BatchResult> {
    const queue = this.queues.get(modelName);
    if (!queue) return Promise.reject(new Error(`model ${modelName} is not served by this worker`));
    const { model } = queue;
    if (rows.length === 0) return Promise.reject(new Error('a request needs at least one row'));
    for (const row of rows) {
      if (row.length !== model.features) {
        return Promise.reject(new Error(`expected ${model.features} features, got ${row.length}`));
      }
    }
    return new Promise<BatchResult>((resolve, reject) => {
      const req: Request = {
        id: options.id,
        owner: options.owner ?? '',
        weight: options.weight !== undefined && options.weight > 0 ? options.weight : 1,
        onStart: options.onStart,
        trace: options.trace,
        model,
        rows,
        enqueuedAt: performance.now(),
        shouldDrop: options.shouldDrop,
        output: new Float32Array(rows.length * model.outputSize),
        taken: 0,
        done: 0,
        batchSize: 0,
        inferenceMs: 0,
        startedAt: 0,
        failed: false,
        resolve: (r) => {
          this.forget(req);
          resolve(r);
        },
        reject: (e) => {
          this.forget(req);
          reject(e);
        },
      };
      queue.pending.push(req);
      queue.pendingRows += rows.length;
      if (req.id !== undefined) this.byId.set(req.id, { req, queue });
      this.pump();
    });
  }

  private forget(req: Request): void {
    if (req.id !== undefined && this.byId.get(req.id)?.req === req) this.byId.delete(req.id);
  }

  /**
   * Drops a request whose rows have not gone into a batch yet (rejecting it with DroppedError).
   * Returns false when it is unknown or already (partly) running: then it completes.
   */
  cancel(id: string, reason = 'canceled by its owner'): boolean {
    const entry = this.byId.get(id);
    if (!entry || entry.req.taken > 0 || entry.req.failed) return false;
    entry.req.failed = true;
    entry.queue.pendingRows -= entry.req.rows.length;
    entry.req.reject(new DroppedError(reason));
    return true;
  }

  /** Hands ready batches to idle threads; called on submit, when a thread frees up, and on timers. */
  pump = (): void => {
    const now = performance.now();
    while (this.runner.idleCount() > 0) {
      const queue = this.nextReadyQueue(now);
      if (!queue) break;
      this.dispatch(queue);
    }
    this.armTimer(now);
  };

  private isReady(queue: ModelQueue, now: number): boolean {
    const head = queue.pending.peek();
    if (!head) return false;
    const { maxBatchSize, maxDelayMs } = queue.model;
    return maxDelayMs === 0 || queue.pendingRows >= maxBatchSize || now - head.enqueuedAt >= maxDelayMs;
  }

  private nextReadyQueue(now: number): ModelQueue | undefined {
    let best: ModelQueue | undefined;
    let bestAt = Number.POSITIVE_INFINITY;
    for (const queue of this.queues.values()) {
      const head = queue.pending.peek();
      if (head && head.enqueuedAt < bestAt && this.isReady(queue, now)) {
        best = queue;
        bestAt = head.enqueuedAt;
      }
    }
    return best;
  }

  private armTimer(now: number): void {
    let wakeAt = Number.POSITIVE_INFINITY;
    for (const queue of this.queues.values()) {
      const head = queue.pending.peek();
      if (head && queue.model.maxDelayMs > 0) wakeAt = Math.min(wakeAt, head.enqueuedAt + queue.model.maxDelayMs);
    }
    if (wakeAt === Number.POSITIVE_INFINITY || wakeAt >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = wakeAt;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Number.POSITIVE_INFINITY;
        this.pump();
      },
      Math.max(0, wakeAt - now),
    );
  }

  private dispatch(queue: ModelQueue): void {
    const { model } = queue;
    const parts: { req: Request; offset: number; count: number }[] = [];
    let capacity = model.maxBatchSize;
    while (capacity > 0) {
      const req = queue.pending.peek();
      if (!req) break;
      if (req.failed && req.taken === 0) {
        // Canceled while pending: its rows were already taken off the count.
        queue.pending.shift();
        continue;
      }
      if (req.taken === 0 && req.shouldDrop) {
        const reason = req.shouldDrop();
        if (reason !== null) {
          queue.pending.shift();
          queue.pendingRows -= req.rows.length;
          req.failed = true;
          req.reject(new DroppedError(reason));
          continue;
        }
      }
      const count = Math.min(capacity, req.rows.length - req.taken);
      parts.push({ req, offset: req.taken, count });
      req.taken += count;
      capacity -= count;
      queue.pendingRows -= count;
      if (req.taken === req.rows.length) queue.pending.shift();
    }
    if (parts.length === 0) return;

    const rows = model.maxBatchSize - capacity;
    const input = new Float32Array(rows * model.features);
    let at = 0;
    for (const { req, offset, count } of parts) {
      for (let r = offset; r < offset + count; r++) {
        input.set(req.rows[r] as Row, at);
        at += model.features;
      }
    }
    const startedAt = Date.now();
    for (const { req } of parts) {
      if (req.startedAt === 0) {
        req.startedAt = startedAt;
        req.onStart?.(startedAt);
      }
    }
    this.inFlight++;
    this.running.set(model.name, (this.running.get(model.name) ?? 0) + 1);
    const ended = () => this.running.set(model.name, (this.running.get(model.name) ?? 1) - 1);
    this.runner.run(model.name, rows, input).then(
      (result) => {
        this.inFlight--;
        ended();
        this.hooks.onBatch?.({ model: model.name, rows, requests: parts.length, inferenceMs: result.inferenceMs });
        if (this.hooks.onTracedBatch) {
          const jobs: SpanContext[] = [];
          for (const { req } of parts) if (req.trace) jobs.push(req.trace);
          if (jobs.length > 0) this.hooks.onTracedBatch({ model: model.name, rows, startedAt, jobs });
        }
        let from = 0;
        for (const { req, offset, count } of parts) {
          const size = count * model.outputSize;
          req.output.set(result.output.subarray(from, from + size), offset * model.outputSize);
          from += size;
          req.done += count;
          req.batchSize = Math.max(req.batchSize, rows);
          req.inferenceMs += result.inferenceMs;
          if (req.done === req.rows.length && !req.failed) {
            req.resolve({
              output: req.output,
              batchSize: req.batchSize,
              inferenceMs: req.inferenceMs,
              startedAt: req.startedAt,
            });
          }
        }
        this.pump();
      },
      (err: Error) => {
        this.inFlight--;
        ended();
        for (const { req } of parts) {
          if (!req.failed) {
            req.failed = true;
            req.reject(err);
          }
        }
        this.pump();
      },
    );
  }

  /** Stops the delay timer; pending requests stay pending (the worker drains before closing). */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
