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
import { openSession, runBatch } from './ort-batch.mjs';

/**
 * @typedef {{ name: string, path: string, inputName: string, outputName: string, features: number, outputSize: number }} ThreadModel
 * @typedef {{ type: 'run', id: number, model: string, rows: number, input: Float32Array }} RunMessage
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

/** @param {RunMessage} msg */
async function run(msg) {
  const entry = sessions.get(msg.model);
  if (!entry) throw new Error(`model ${msg.model} is not loaded in this thread`);
  const { output, ms } = await runBatch(ort, entry.session, entry.model, msg.rows, msg.input);
  port.postMessage({ type: 'result', id: msg.id, output, ms }, [output.buffer]);
}

port.on('message', (/** @type {RunMessage} */ msg) => {
  run(msg).catch((err) => {
    port.postMessage({ type: 'error', id: msg.id, message: err instanceof Error ? err.message : String(err) });
  });
});

init().then(
  () => port.postMessage({ type: 'ready' }),
  (err) => port.postMessage({ type: 'init-error', message: err instanceof Error ? err.message : String(err) }),
);
