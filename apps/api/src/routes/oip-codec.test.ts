import { join } from 'node:path';
import { loadManifest, type ModelEntry, QuernError } from '@quern/shared';
import { describe, expect, it } from 'vitest';
import { decodeInferRequest, encodeInferResponse } from './oip-codec';

const manifest = loadManifest(join(import.meta.dirname, '../../../../models'));
const cars = manifest.models.find((m) => m.name === 'cars-mpg') as ModelEntry;
const CAR = [4, 140, 90, 2264, 15.5, 1971];
const OTHER = [8, 350, 165, 3693, 11.5, 1970];

const json = (body: unknown) => new TextEncoder().encode(JSON.stringify(body));

/** A binary-tensor-extension body: the JSON header, then the tensor's little-endian float32 bytes. */
function binaryBody(header: unknown, values: number[]): { body: Uint8Array; headerLength: string } {
  const head = json(header);
  const body = new Uint8Array(head.byteLength + values.length * 4);
  body.set(head);
  const view = new DataView(body.buffer, head.byteLength);
  values.forEach((v, i) => {
    view.setFloat32(i * 4, v, true);
  });
  return { body, headerLength: String(head.byteLength) };
}

function refused(run: () => unknown): QuernError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(QuernError);
    return err as QuernError;
  }
  throw new Error('expected the request to be refused');
}

const input = (over: Record<string, unknown> = {}) => ({
  inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: CAR, ...over }],
});

describe('decodeInferRequest', () => {
  it('takes flat and nested data alike, row-major', () => {
    const flat = decodeInferRequest(cars, json(input({ shape: [2, 6], data: [...CAR, ...OTHER] })), undefined);
    const nested = decodeInferRequest(cars, json(input({ shape: [2, 6], data: [CAR, OTHER] })), undefined);
    expect(flat.input.count).toBe(2);
    expect(Array.from(flat.input.row(1))).toEqual(Array.from(Float32Array.from(OTHER)));
    expect(Array.from(nested.input.values)).toEqual(Array.from(flat.input.values));
  });

  it('reads a binary tensor after the JSON header', () => {
    const { body, headerLength } = binaryBody(
      {
        id: 'r1',
        inputs: [{ name: 'features', shape: [2, 6], datatype: 'FP32', parameters: { binary_data_size: 48 } }],
        outputs: [{ name: 'mpg', parameters: { binary_data: true } }],
      },
      [...CAR, ...OTHER],
    );
    const decoded = decodeInferRequest(cars, body, headerLength);
    expect(decoded.id).toBe('r1');
    expect(decoded.binaryOutput).toBe(true);
    expect(Array.from(decoded.input.values)).toEqual(Array.from(Float32Array.from([...CAR, ...OTHER])));
  });

  it('maps parameters.priority and parameters.timeout (µs) to Quern’s priority and deadline', () => {
    const decoded = decodeInferRequest(
      cars,
      json({ ...input(), parameters: { priority: 7, timeout: 2_500_100, binary_data_output: true } }),
      undefined,
    );
    expect(decoded).toMatchObject({ priority: 7, timeoutMs: 2501, binaryOutput: true });
    const defaults = decodeInferRequest(cars, json({ ...input(), parameters: { priority: 0, timeout: 0 } }), undefined);
    expect(defaults).toMatchObject({ priority: undefined, timeoutMs: undefined, binaryOutput: false });
  });

  it.each([
    ['a datatype the model does not take', input({ datatype: 'FP64' }), /data-type is 'FP64'.*expects 'FP32'/],
    ['a row of the wrong width', input({ shape: [1, 5], data: CAR.slice(0, 5) }), /expected \[-1,6\], got \[1,5\]/],
    ['a shape without the batch dimension', input({ shape: [6] }), /expected \[-1,6\], got \[6\]/],
    ['more values than the shape says', input({ data: [...CAR, 1] }), /more than the 6 values/],
    ['fewer values than the shape says', input({ shape: [2, 6] }), /holds 6 values, but its shape says 12/],
    ['a string among the values', input({ data: [...CAR.slice(0, 5), '1971'] }), /must hold numbers/],
    ['nesting deeper than the shape', input({ data: [[CAR]] }), /nested at most 2 deep/],
    ['a value beyond FP32', input({ data: [...CAR.slice(0, 5), 1e39] }), /beyond FP32's range/],
    ['an unknown input name', input({ name: 'x' }), /unexpected inference input 'x'/],
    ['no data', input({ data: undefined }), /has no data/],
    ['a batch over max_batch_size', input({ shape: [257, 6], data: [] }), /batch-size must be <= 256/],
    [
      'two inputs',
      { inputs: [input().inputs[0], input().inputs[0]] },
      /expected 1 inputs but got 2 inputs for model 'cars-mpg'/,
    ],
    ['an unknown output', { ...input(), outputs: [{ name: 'nope' }] }, /unexpected inference output 'nope'/],
    ['a priority out of range', { ...input(), parameters: { priority: 101 } }, /parameters.priority/],
    ['a negative timeout', { ...input(), parameters: { timeout: -1 } }, /parameters.timeout/],
    ['no inputs at all', { inputs: [] }, /inputs/],
  ])('refuses %s with a clear validation error (400 under /v2)', (_, body, message) => {
    const err = refused(() => decodeInferRequest(cars, json(body), undefined));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toMatch(message);
  });

  it('refuses a body that is not JSON, and a header length beyond the body', () => {
    expect(refused(() => decodeInferRequest(cars, new TextEncoder().encode('{"inputs": ['), undefined)).code).toBe(
      'malformed_request',
    );
    const body = json(input());
    expect(refused(() => decodeInferRequest(cars, body, String(body.byteLength + 1))).code).toBe('malformed_request');
    expect(refused(() => decodeInferRequest(cars, body, 'abc')).code).toBe('malformed_request');
  });

  it('refuses binary data whose size does not match the shape or the bytes sent', () => {
    const header = (size: number) => ({
      inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', parameters: { binary_data_size: size } }],
    });
    const short = binaryBody(header(20), CAR.slice(0, 5));
    expect(refused(() => decodeInferRequest(cars, short.body, short.headerLength)).message).toMatch(
      /20 bytes of binary data, but shape \[1,6\] of FP32 takes 24/,
    );
    const lying = binaryBody(header(24), [...CAR, 1]);
    expect(refused(() => decodeInferRequest(cars, lying.body, lying.headerLength)).message).toMatch(
      /binary_data_size is 24 but 28 bytes follow/,
    );
    const stray = binaryBody(input(), [1]);
    expect(refused(() => decodeInferRequest(cars, stray.body, stray.headerLength)).message).toMatch(
      /no input gives binary_data_size/,
    );
    const nan = binaryBody(header(24), [...CAR.slice(0, 5), Number.NaN]);
    expect(refused(() => decodeInferRequest(cars, nan.body, nan.headerLength)).message).toMatch(/row 0 holds a NaN/);
  });
});

describe('encodeInferResponse', () => {
  const rows = [[24.8987865], [13.25]];

  it('answers JSON with the batch dimension in the shape and the request id', () => {
    const encoded = encodeInferResponse(cars, '1.0.0', rows, { id: 'r1', binaryOutput: false });
    expect(encoded).toEqual({
      kind: 'json',
      response: {
        model_name: 'cars-mpg',
        model_version: '1.0.0',
        id: 'r1',
        outputs: [{ name: 'mpg', datatype: 'FP32', shape: [2, 1], data: [24.8987865, 13.25] }],
      },
    });
  });

  it('answers binary outputs after a JSON header of the stated length', () => {
    const encoded = encodeInferResponse(cars, '1.0.0', rows, { id: undefined, binaryOutput: true });
    if (encoded.kind !== 'binary') throw new Error('expected a binary response');
    const header = JSON.parse(Buffer.from(encoded.body.subarray(0, encoded.headerLength)).toString('utf8'));
    expect(header.outputs).toEqual([
      { name: 'mpg', datatype: 'FP32', shape: [2, 1], parameters: { binary_data_size: 8 } },
    ]);
    const view = new DataView(encoded.body.buffer, encoded.headerLength);
    expect(encoded.body.byteLength - encoded.headerLength).toBe(8);
    expect([view.getFloat32(0, true), view.getFloat32(4, true)]).toEqual([Math.fround(24.8987865), 13.25]);
  });
});
