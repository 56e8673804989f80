import { Worker } from 'node:worker_threads';
import { openSession, runBatch } from './ort-batch.mjs';

export interface PoolModel {
  name: string;
  path: string;
  inputName: string;
  outputName: string;
  features: number;
  outputSize: number;
}

export interface BatchOutput {
  /** `rows × outputSize` values, row-major. */
  output: Float32Array;
  /** Time inside `session.run`, in milliseconds. */
  inferenceMs: number;
}

interface Slot {
  index: number;
  thread: Worker;
  busy: boolean;
  pending: { id: number; resolve: (out: BatchOutput) => void; reject: (err: Error) => void } | undefined;
}

type ThreadMessage =
  | { type: 'ready' }
  | { type: 'init-error'; message: string }
  | { type: 'result'; id: number; output: Float32Array; ms: number }
  | { type: 'error'; id: number; message: string }
  | { type: 'loaded'; id: number }
  | { type: 'load-error'; id: number; message: string };

export interface InferencePoolOptions {
  models: PoolModel[];
  threads: number;
  /**
   * Small batches run on the calling thread instead of hopping to an inference thread and back
   * (two message hops cost more than a small model's whole run): batches of at most `maxRows`
   * rows, for models whose run of that size measures at most `maxMs`. ONNX Runtime blocks the
   * thread while it computes, so `maxMs` bounds how long lock renewal and Redis I/O can be held
   * up. `maxRows: 0` turns it off.
   */
  inline?: { maxRows: number; maxMs: number };
  /** Called whenever a thread becomes free, so the scheduler can hand it the next batch. */
  onIdle?: () => void;
  onThreadExit?: (info: { index: number; code: number }) => void;
}

const THREAD_URL = new URL('./inference-thread.mjs', import.meta.url);

/** Inline batches queued on the event loop at once; more go to idle threads. */
export const MAX_INLINE_IN_FLIGHT = 2;

/** How long small batches of a model that ran slow inline go to the threads before inline is tried again. */
const INLINE_PAUSE_MS = 10_000;

type OrtModule = typeof import('onnxruntime-node');
type OrtSession = Awaited<ReturnType<OrtModule['InferenceSession']['create']>>;

/** A model's session on the calling thread, and whether its small batches are cheap enough to run there. */
interface InlineModel {
  model: PoolModel;
  session: OrtSession;
  /** Moving average of a small batch's run, in ms; past the bound, inline pauses for the model. */
  averageMs: number;
  /** The model measured within the bound at start (never inline otherwise). */
  enabled: boolean;
  /** While the average is past the bound: batches go to the threads until then (epoch ms). */
  pausedUntil: number;
}

/**
 * A fixed set of worker threads, one ONNX Runtime session per model in each. The caller (the
 * batch scheduler) only runs a batch when `idleCount() > 0`; each thread runs one batch at a time.
 * A thread that dies is replaced and the batch it held is rejected, so no job hangs.
 */
export class InferencePool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closing = false;
  private busyMsTotal = 0;
  private busySince = new Map<number, number>();
  private ort: OrtModule | undefined;
  private readonly inline = new Map<string, InlineModel>();
  private inlineBatches = 0;
  /** Inline batches started and not yet finished (ONNX Runtime runs each in a later setImmediate). */
  private inlineInFlight = 0;
  /** The models every thread holds now (a replaced thread loads these). */
  private models: PoolModel[];
  /** Loads sent to threads and not answered yet, by `thread index:load id`. */
  private readonly loads = new Map<string, { resolve: () => void; reject: (err: Error) => void }>();

  constructor(private readonly options: InferencePoolOptions) {
    this.models = [...options.models];
  }

  get size(): number {
    return this.options.threads;
  }

  /** Starts every thread and waits until each has loaded every model. */
  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.options.threads }, (_, index) => this.spawn(index)));
    await this.startInline();
  }

  /**
   * Loads a session per model on this thread and times a batch of the inline size; a model
   * slower than the bound never runs here. The timing is the largest of a few warm runs.
   */
  private async startInline(): Promise<void> {
    const inline = this.options.inline;
    if (!inline || inline.maxRows <= 0) return;
    this.ort = await import('onnxruntime-node');
    for (const model of this.models) await this.loadInline(model);
  }

  private async loadInline(model: PoolModel): Promise<void> {
    const inline = this.options.inline;
    const ort = this.ort;
    if (!inline || inline.maxRows <= 0 || !ort) return;
    const session = await openSession(ort, model, 1);
    const entry: InlineModel = { model, session, averageMs: 0, enabled: true, pausedUntil: 0 };
    let worst = 0;
    try {
      for (let i = 0; i < 5; i++) {
        const { inferenceMs } = await this.runInline(
          entry,
          inline.maxRows,
          new Float32Array(inline.maxRows * model.features),
        );
        if (i > 0) worst = Math.max(worst, inferenceMs);
      }
      entry.averageMs = worst;
      entry.enabled = worst <= inline.maxMs;
    } catch {
      // A model that cannot take a batch of the inline size (a fixed batch dimension) runs on
      // the threads only, as before inline existed.
      entry.enabled = false;
    }
    this.inline.set(model.name, entry);
  }

  /** Models whose small batches run on the calling thread (for logs and tests). */
  inlineModels(): string[] {
    return [...this.inline.values()].filter((m) => m.enabled).map((m) => m.model.name);
  }

  /** Batches run on the calling thread since start. */
  get inlineBatchCount(): number {
    return this.inlineBatches;
  }

  private async runInline(entry: InlineModel, rows: number, input: Float32Array): Promise<BatchOutput> {
    const { output, ms } = await runBatch(this.ort as OrtModule, entry.session, entry.model, rows, input);
    return { output, inferenceMs: ms };
  }

  private spawn(index: number): Promise<void> {
    const thread = new Worker(THREAD_URL, {
      workerData: { models: this.models, intraOpThreads: 1 },
      name: `inference-${index}`,
    });
    const slot: Slot = { index, thread, busy: true, pending: undefined };
    this.slots[index] = slot;
    return new Promise((resolve, reject) => {
      let ready = false;
      thread.on('message', (msg: ThreadMessage) => {
        switch (msg.type) {
          case 'ready':
            ready = true;
            slot.busy = false;
            resolve();
            this.options.onIdle?.();
            return;
          case 'init-error':
            reject(new Error(`inference thread ${index} could not load models: ${msg.message}`));
            void thread.terminate();
            return;
          case 'result':
          case 'error':
            this.settle(slot, msg);
            return;
          case 'loaded':
          case 'load-error': {
            const key = `${index}:${msg.id}`;
            const load = this.loads.get(key);
            this.loads.delete(key);
            if (msg.type === 'loaded') load?.resolve();
            else load?.reject(new Error(msg.message));
            return;
          }
        }
      });
      thread.on('error', (err) => {
        if (!ready) reject(err);
        this.failPending(slot, err);
      });
      thread.on('exit', (code) => {
        this.failPending(slot, new Error(`inference thread ${index} exited with code ${code}`));
        // A load this thread had not answered fails too (its replacement starts without that model).
        for (const [key, load] of this.loads) {
          if (!key.startsWith(`${index}:`)) continue;
          this.loads.delete(key);
          load.reject(new Error(`inference thread ${index} exited with code ${code} while loading a model`));
        }
        if (this.closing) return;
        this.options.onThreadExit?.({ index, code });
        if (ready && this.slots[index] === slot) {
          // Replace a crashed thread; its batch was already rejected and will be retried.
          this.spawn(index).catch(() => undefined);
        }
      });
    });
  }

  private settle(slot: Slot, msg: Extract<ThreadMessage, { type: 'result' | 'error' }>): void {
    const pending = slot.pending;
    if (!pending || pending.id !== msg.id) return;
    this.markIdle(slot);
    if (msg.type === 'result') pending.resolve({ output: msg.output, inferenceMs: msg.ms });
    else pending.reject(new Error(msg.message));
    this.options.onIdle?.();
  }

  private failPending(slot: Slot, err: Error): void {
    const pending = slot.pending;
    if (!pending) return;
    this.markIdle(slot);
    slot.busy = true; // a dead thread takes no more work until its replacement is ready
    pending.reject(err);
  }

  private markIdle(slot: Slot): void {
    const since = this.busySince.get(slot.index);
    if (since !== undefined) this.busyMsTotal += performance.now() - since;
    this.busySince.delete(slot.index);
    slot.pending = undefined;
    slot.busy = false;
  }

  idleCount(): number {
    let n = 0;
    for (const slot of this.slots) if (slot && !slot.busy) n++;
    return n;
  }

  busyCount(): number {
    return this.slots.filter((s) => s?.pending !== undefined).length;
  }

  /** Thread-milliseconds spent inside batches since start, including batches still running. */
  busyMs(): number {
    const now = performance.now();
    let busy = this.busyMsTotal;
    for (const since of this.busySince.values()) busy += now - since;
    return busy;
  }

  /**
   * Runs one batch on a free thread. `input` is transferred to the thread (not copied) and
   * must not be used afterwards.
   */
  run(model: string, rows: number, input: Float32Array): Promise<BatchOutput> {
    if (this.closing) return Promise.reject(new Error('the inference pool is closed'));
    const inline = this.inline.get(model);
    const bound = this.options.inline;
    const idle = this.slots.find((s) => s && !s.busy);
    if (
      inline?.enabled &&
      bound &&
      rows <= bound.maxRows &&
      inline.pausedUntil <= Date.now() &&
      // ONNX Runtime runs each inline batch in a setImmediate of its own, so a burst of small
      // batches (several models, a busy turn) would run back to back on the event loop: at most
      // MAX_INLINE_IN_FLIGHT are queued there while a thread is idle, the rest go to that thread.
      // With every thread busy a small batch still runs inline (rather than waiting for a thread).
      (this.inlineInFlight < MAX_INLINE_IN_FLIGHT || !idle)
    ) {
      this.inlineBatches++;
      this.inlineInFlight++;
      const started = performance.now();
      return this.runInline(inline, rows, input)
        .finally(() => {
          this.inlineInFlight--;
        })
        .then((out) => {
          this.busyMsTotal += performance.now() - started;
          inline.averageMs = inline.averageMs * 0.95 + out.inferenceMs * 0.05;
          // A model that turned slow (a busy neighbour, a cold cache) goes back to the threads for a
          // while, then is tried again: one slow run (a GC pause) moves the average only a little.
          if (inline.averageMs > bound.maxMs) {
            inline.pausedUntil = Date.now() + INLINE_PAUSE_MS;
            inline.averageMs = bound.maxMs / 2;
          }
          return out;
        });
    }
    const slot = idle;
    if (!slot) return Promise.reject(new Error('no idle inference thread'));
    const id = this.nextId++;
    slot.busy = true;
    this.busySince.set(slot.index, performance.now());
    return new Promise<BatchOutput>((resolve, reject) => {
      slot.pending = { id, resolve, reject };
      slot.thread.postMessage({ type: 'run', id, model, rows, input }, [input.buffer as ArrayBuffer]);
    });
  }

  /** Names of the models every thread holds. */
  modelNames(): string[] {
    return this.models.map((m) => m.name);
  }

  /**
   * Loads (or replaces) a model in every thread, and inline, while the others keep serving: each
   * thread opens the session, checks the graph's input and output names and warms it with a row
   * before answering; the model takes batches only once every thread has it. A thread that
   * refuses it unloads it everywhere and rejects with the thread's reason.
   */
  async load(model: PoolModel): Promise<void> {
    if (this.closing) throw new Error('the inference pool is closed');
    const slots = this.slots.filter((s): s is Slot => s !== undefined);
    const loads = slots.map(
      (slot) =>
        new Promise<void>((resolve, reject) => {
          const id = this.nextId++;
          this.loads.set(`${slot.index}:${id}`, { resolve, reject });
          slot.thread.postMessage({ type: 'load', id, model });
        }),
    );
    try {
      await Promise.all(loads);
      await this.loadInline(model);
    } catch (err) {
      for (const slot of slots) slot.thread.postMessage({ type: 'unload', model: model.name });
      throw err;
    }
    this.models = [...this.models.filter((m) => m.name !== model.name), model];
  }

  /** Releases a model's sessions; the caller has made sure no batch of it is pending. */
  async unload(name: string): Promise<void> {
    this.models = this.models.filter((m) => m.name !== name);
    for (const slot of this.slots) slot?.thread.postMessage({ type: 'unload', model: name });
    const inline = this.inline.get(name);
    this.inline.delete(name);
    await inline?.session.release().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const entry of this.inline.values()) await entry.session.release().catch(() => undefined);
    this.inline.clear();
    await Promise.all(this.slots.map((s) => s?.thread.terminate()));
  }
}
