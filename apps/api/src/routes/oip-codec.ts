import { z } from '@hono/zod-openapi';
import {
  type ModelEntry,
  OIP_DATATYPE,
  type OipInferenceResponse,
  oipResponse,
  QuernError,
  RowMatrix,
} from '@quern/shared';
import { validationError } from '../errors';
import { OipParametersSchema as ParametersSchema } from '../schemas';

/*
 * The Open Inference Protocol v2's HTTP codec (KServe / Triton REST): an inference request,
 * JSON or with the binary tensor extension, becomes checked input rows; output rows become the
 * response, JSON or binary. Every input the model cannot take is a `validation_failed`, which
 * the `/v2` routes answer 400 (see `problem`), as the specification asks.
 */

/** Most inputs and requested outputs one request may name (a model here has one of each). */
const MAX_TENSORS = 16;
/** Most Quern priority a request may ask for (`JobOptionsShape.priority`). */
const MAX_PRIORITY = 100;

export const OipRequestInputSchema = z
  .object({
    name: z.string().max(256).openapi({ example: 'features' }),
    shape: z
      .array(z.number().int().min(0))
      .max(8)
      .openapi({ description: '`[rows, features]`.', example: [1, 6] }),
    datatype: z.string().max(16).openapi({ description: 'Quern’s models take `FP32`.', example: 'FP32' }),
    parameters: ParametersSchema.optional().openapi({
      description: '`binary_data_size`: the tensor’s bytes follow the JSON header (binary tensor extension).',
    }),
    data: z
      .unknown()
      .optional()
      .openapi({
        type: 'array',
        description: 'The values in row-major order, flat or nested; absent when `binary_data_size` is given.',
        example: [4, 140, 90, 2264, 15.5, 1971],
      }),
  })
  .openapi('OipRequestInput');

export const OipRequestOutputSchema = z
  .object({
    name: z.string().max(256).openapi({ example: 'mpg' }),
    parameters: ParametersSchema.optional().openapi({
      description: '`binary_data: true` returns the tensor as bytes after the JSON header.',
    }),
  })
  .openapi('OipRequestOutput');

export const OipInferenceRequestSchema = z
  .object({
    id: z.string().max(256).optional().openapi({ description: 'Echoed in the response.', example: 'req-42' }),
    parameters: ParametersSchema.optional().openapi({
      description:
        '`priority` (0 the default, else 1 the highest to 100) and `timeout` (µs a job may wait in the queue) map to ' +
        'Quern’s priority and deadline; `binary_data_output: true` returns every output as bytes.',
    }),
    inputs: z.array(OipRequestInputSchema).min(1).max(MAX_TENSORS),
    outputs: z.array(OipRequestOutputSchema).max(MAX_TENSORS).optional(),
  })
  .openapi('OipInferenceRequest', {
    example: {
      id: 'req-42',
      inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: [4, 140, 90, 2264, 15.5, 1971] }],
    },
  });

/** An inference request, decoded and checked against its model. */
export interface OipInferRequest {
  id: string | undefined;
  input: RowMatrix;
  /** The output goes back as bytes after the JSON header. */
  binaryOutput: boolean;
  /** Quern priority (1 highest); undefined: the tier's. */
  priority: number | undefined;
  /** Deadline in ms; undefined: the server's default. */
  timeoutMs: number | undefined;
}

const invalid = (message: string) => new QuernError('validation_failed', message);

/**
 * Decodes a request body: all JSON, or (with `Inference-Header-Content-Length`) a JSON header
 * followed by the bytes of the tensors that give `binary_data_size`, in the order of `inputs`.
 */
export function decodeInferRequest(
  model: ModelEntry,
  body: Uint8Array,
  headerLength: string | undefined,
): OipInferRequest {
  let jsonLength = body.byteLength;
  if (headerLength !== undefined) {
    const n = /^\d{1,12}$/.test(headerLength.trim()) ? Number(headerLength) : Number.NaN;
    if (!(n <= body.byteLength)) {
      throw new QuernError(
        'malformed_request',
        `Inference-Header-Content-Length must be a byte count within the body (${body.byteLength} bytes)`,
      );
    }
    jsonLength = n;
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body.buffer, body.byteOffset, jsonLength).toString('utf8'));
  } catch {
    throw new QuernError('malformed_request', 'the inference request header is not valid JSON');
  }
  const parsed = OipInferenceRequestSchema.safeParse(json);
  if (!parsed.success) throw validationError(parsed.error, 'json');
  const request = parsed.data;
  const binary = body.subarray(jsonLength);

  const expected = model.input.name;
  const features = model.input.features;
  if (request.inputs.length !== 1) {
    throw invalid(`expected 1 inputs but got ${request.inputs.length} inputs for model '${model.name}'`);
  }
  const tensor = request.inputs[0] as z.infer<typeof OipRequestInputSchema>;
  if (tensor.name !== expected) {
    throw invalid(`unexpected inference input '${tensor.name}' for model '${model.name}'; it takes '${expected}'`);
  }
  if (tensor.datatype !== OIP_DATATYPE) {
    throw invalid(
      `inference input '${expected}' data-type is '${tensor.datatype}', but model '${model.name}' expects '${OIP_DATATYPE}'`,
    );
  }
  const [rows, width] = tensor.shape;
  if (tensor.shape.length !== 2 || width !== features || rows === undefined || rows < 1) {
    throw invalid(
      `unexpected shape for input '${expected}' for model '${model.name}': expected [-1,${features}], got [${tensor.shape.join(',')}]`,
    );
  }
  const limit = model.batching.max_batch_size;
  if (rows > limit) {
    throw invalid(`inference request batch-size must be <= ${limit} for '${model.name}', got ${rows}`);
  }
  const count = rows * features;
  const binarySize = tensor.parameters?.binary_data_size;
  let values: Float32Array;
  if (binarySize !== undefined) {
    if (tensor.data !== undefined) {
      throw invalid(`input '${expected}' gives both data and binary_data_size`);
    }
    if (typeof binarySize !== 'number' || !Number.isInteger(binarySize) || binarySize < 0) {
      throw invalid(`input '${expected}': binary_data_size must be a byte count`);
    }
    if (binarySize !== binary.byteLength) {
      throw invalid(
        `input '${expected}': binary_data_size is ${binarySize} but ${binary.byteLength} bytes follow the JSON header`,
      );
    }
    if (binarySize !== count * 4) {
      throw invalid(
        `input '${expected}': ${binarySize} bytes of binary data, but shape [${rows},${features}] of FP32 takes ${count * 4}`,
      );
    }
    values = new Float32Array(count);
    const view = new DataView(binary.buffer, binary.byteOffset, binary.byteLength);
    for (let i = 0; i < count; i++) values[i] = view.getFloat32(i * 4, true);
  } else {
    if (binary.byteLength > 0) {
      throw invalid(`${binary.byteLength} bytes follow the JSON header, but no input gives binary_data_size`);
    }
    if (tensor.data === undefined) throw invalid(`input '${expected}' has no data`);
    values = flatten(tensor.data, count, tensor.shape.length, expected);
  }
  const input = new RowMatrix(values, rows, features);
  const bad = input.firstNonFiniteRow();
  if (bad >= 0) {
    throw invalid(`input '${expected}': row ${bad} holds a NaN, an infinity or a value beyond FP32's range`);
  }

  let binaryOutput = request.parameters?.binary_data_output === true;
  for (const out of request.outputs ?? []) {
    if (out.name !== model.output.name) {
      throw invalid(`unexpected inference output '${out.name}' for model '${model.name}'`);
    }
    const classification = out.parameters?.classification;
    if (classification !== undefined && classification !== 0) {
      throw invalid(`output '${out.name}': the classification extension is not supported`);
    }
    const wanted = out.parameters?.binary_data;
    if (typeof wanted === 'boolean') binaryOutput = wanted;
  }

  return {
    id: request.id,
    input,
    binaryOutput,
    priority: priorityOf(request.parameters?.priority),
    timeoutMs: timeoutOf(request.parameters?.timeout),
  };
}

/** `parameters.priority`: 0 (or absent) is the default; 1 the highest to 100. */
function priorityOf(value: unknown): number | undefined {
  if (value === undefined || value === 0) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_PRIORITY) {
    throw invalid(`parameters.priority must be an integer from 0 (the default) to ${MAX_PRIORITY}`);
  }
  return value;
}

/** `parameters.timeout` in µs (0 or absent: the server's default), as Quern's deadline in ms. */
function timeoutOf(value: unknown): number | undefined {
  if (value === undefined || value === 0) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw invalid('parameters.timeout must be a whole number of microseconds');
  }
  return Math.max(1, Math.ceil(value / 1000));
}

/**
 * The values of `data`, flat or nested to at most `depth` levels, in row-major order: exactly
 * `count` numbers, each a finite number (checked against FP32's range by the caller).
 */
function flatten(data: unknown, count: number, depth: number, name: string): Float32Array {
  const out = new Float32Array(count);
  let at = 0;
  const walk = (value: unknown, level: number): void => {
    if (!Array.isArray(value)) throw invalid(`input '${name}': data must be an array of numbers`);
    for (const v of value) {
      if (typeof v === 'number') {
        if (!Number.isFinite(v)) throw invalid(`input '${name}': data holds a value that is not a finite number`);
        if (at >= count) throw invalid(`input '${name}': data holds more than the ${count} values its shape says`);
        out[at++] = v;
      } else if (Array.isArray(v) && level + 1 < depth) {
        walk(v, level + 1);
      } else {
        throw invalid(`input '${name}': data must hold numbers (FP32), nested at most ${depth} deep`);
      }
    }
  };
  walk(data, 0);
  if (at !== count) throw invalid(`input '${name}': data holds ${at} values, but its shape says ${count}`);
  return out;
}

/** A response body: JSON, or a JSON header followed by the output's bytes. */
export type OipEncoded =
  | { kind: 'json'; response: OipInferenceResponse }
  | { kind: 'binary'; body: Uint8Array<ArrayBuffer>; headerLength: number };

/** Encodes the output rows of one request (one per input row) as an inference response. */
export function encodeInferResponse(
  model: ModelEntry,
  modelVersion: string,
  rows: readonly (readonly number[])[],
  request: Pick<OipInferRequest, 'id' | 'binaryOutput'>,
  parameters?: Record<string, string | number | boolean>,
): OipEncoded {
  const response = oipResponse(model, modelVersion, rows, request.id);
  if (parameters) response.parameters = parameters;
  if (!request.binaryOutput) return { kind: 'json', response };
  const output = response.outputs[0];
  if (!output) return { kind: 'json', response };
  const data = output.data ?? [];
  const bytes = new Uint8Array(data.length * 4);
  const view = new DataView(bytes.buffer);
  data.forEach((v, i) => {
    view.setFloat32(i * 4, v, true);
  });
  delete output.data;
  output.parameters = { binary_data_size: bytes.byteLength };
  const header = Buffer.from(JSON.stringify(response), 'utf8');
  const body = new Uint8Array(header.byteLength + bytes.byteLength);
  body.set(header, 0);
  body.set(bytes, header.byteLength);
  return { kind: 'binary', body, headerLength: header.byteLength };
}
