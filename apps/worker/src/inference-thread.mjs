// @ts-check
/**
 * One inference thread: holds one ONNX Runtime session per model and runs whole batches.
 *
 * ONNX Runtime's run() holds the JavaScript thread for the whole computation, so it runs here,
 * never on the thread that renews BullMQ locks and talks to Redis. Plain JavaScript (checked by
 * tsc through JSDoc) so the same file loads under tsx, vitest and a bundled build alike.
 */
import { parentPort, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import { openSession, runBatch, warmSession } from './ort-batch.mjs';

/**
 * @typedef {{ name: string, path: string, inputName: string, outputName: string, features: number, outputSize: number }} ThreadModel
 * @typedef {{ type: 'run', id: number, model: string, rows: number, input: Float32Array }} RunMessage
 * @typedef {{ type: 'load', id: number, model: ThreadModel }} LoadMessage
 * @typedef {{ type: 'unload', model: string }} UnloadMessage
 */

if (!parentPort) throw new Error('inference-thread.mjs must run as a worker thread');
const port = parentPort;

/** @type {{ models: ThreadModel[], intraOpThreads: number }} */
const config = workerData;

/** @type {Map<string, { session: ort.InferenceSession, model: ThreadModel }>} */
const sessions = new Map();

async function init() {
  for (const model of config.models) {
    const session = await openSession(ort, model, config.intraOpThreads);
    sessions.set(model.name, { session, model });
  }
}

/**
 * Loads a model while the others keep serving: opens its session, checks its input and output
 * names and warms it with one batch before it is used, so its first real batch is not slow.
 * @param {LoadMessage} msg
 */
async function load(msg) {
  const session = await openSession(ort, msg.model, config.intraOpThreads);
  try {
    await warmSession(ort, session, msg.model);
  } catch (err) {
    await session.release().catch(() => undefined);
    throw err;
  }
  const old = sessions.get(msg.model.name);
  sessions.set(msg.model.name, { session, model: msg.model });
  if (old) await old.session.release().catch(() => undefined);
  port.postMessage({ type: 'loaded', id: msg.id });
}

/** @param {RunMessage} msg */
async function run(msg) {
  const entry = sessions.get(msg.model);
  if (!entry) throw new Error(`model ${msg.model} is not loaded in this thread`);
  const { output, ms } = await runBatch(ort, entry.session, entry.model, msg.rows, msg.input);
  port.postMessage({ type: 'result', id: msg.id, output, ms }, [output.buffer]);
}

port.on('message', (/** @type {RunMessage | LoadMessage | UnloadMessage} */ msg) => {
  if (msg.type === 'unload') {
    const entry = sessions.get(msg.model);
    sessions.delete(msg.model);
    entry?.session.release().catch(() => undefined);
    return;
  }
  if (msg.type === 'load') {
    load(msg).catch((err) => {
      port.postMessage({ type: 'load-error', id: msg.id, message: err instanceof Error ? err.message : String(err) });
    });
    return;
  }
  run(msg).catch((err) => {
    port.postMessage({ type: 'error', id: msg.id, message: err instanceof Error ? err.message : String(err) });
  });
});

init().then(
  () => port.postMessage({ type: 'ready' }),
  (err) => port.postMessage({ type: 'init-error', message: err instanceof Error ? err.message : String(err) }),
);
