// @ts-check
/**
 * Opening a model's ONNX Runtime session and running one batch through it: the one definition
 * the inference threads (inference-thread.mjs) and the worker's inline path (inference-pool.ts)
 * both use, so the session options and the checks of a batch's output never drift apart. Plain
 * JavaScript (checked by tsc through JSDoc) because the thread file that imports it is.
 */

/**
 * @typedef {{ name: string, path: string, inputName: string, outputName: string, features: number, outputSize: number }} BatchModel
 * @typedef {typeof import('onnxruntime-node')} Ort
 */

/**
 * A session for `model` that runs on the calling thread only (one intra-op thread: parallelism
 * comes from running several threads, not from splitting one batch).
 * @param {Ort} ort
 * @param {BatchModel} model
 * @param {number} intraOpThreads
 */
export function openSession(ort, model, intraOpThreads) {
  return ort.InferenceSession.create(model.path, {
    intraOpNumThreads: intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

/**
 * Runs `rows` rows of `input` (row-major float32) and returns the outputs in a buffer of the
 * caller's own, with the inference time. Throws when the model answers with the wrong output.
 * @param {Ort} ort
 * @param {import('onnxruntime-node').InferenceSession} session
 * @param {BatchModel} model
 * @param {number} rows
 * @param {Float32Array} input
 * @returns {Promise<{ output: Float32Array<ArrayBuffer>, ms: number }>}
 */
export async function runBatch(ort, session, model, rows, input) {
  const tensor = new ort.Tensor('float32', input, [rows, model.features]);
  const started = performance.now();
  const result = await session.run({ [model.inputName]: tensor });
  const ms = performance.now() - started;
  const out = result[model.outputName];
  if (!out) throw new Error(`model ${model.name} produced no output named ${model.outputName}`);
  const data = /** @type {Float32Array} */ (out.data);
  if (data.length !== rows * model.outputSize) {
    throw new Error(`model ${model.name} returned ${data.length} values for ${rows} rows`);
  }
  // A copy this caller owns (a thread then hands it over without another copy).
  const output = new Float32Array(data);
  tensor.dispose?.();
  out.dispose?.();
  return { output, ms };
}

/**
 * Checks that a freshly opened session has the input and output the manifest names, and runs it
 * once on a row of zeros (its output size checked by `runBatch`), so a graph that does not match
 * its manifest entry is refused before it takes traffic and its first real batch is not a cold one.
 * @param {Ort} ort
 * @param {import('onnxruntime-node').InferenceSession} session
 * @param {BatchModel} model
 */
export async function warmSession(ort, session, model) {
  if (!session.inputNames.includes(model.inputName)) {
    throw new Error(`graph inputs are [${session.inputNames.join(', ')}], the manifest names input ${model.inputName}`);
  }
  if (!session.outputNames.includes(model.outputName)) {
    throw new Error(
      `graph outputs are [${session.outputNames.join(', ')}], the manifest names output ${model.outputName}`,
    );
  }
  try {
    await runBatch(ort, session, model, 1, new Float32Array(model.features));
  } catch (err) {
    throw new Error(
      `graph does not take [1, ${model.features}] ${model.inputName} to ${model.outputSize} values per row: ${
        err instanceof Error ? err.message : String(err)
      }`,
    );
  }
}
