import { z } from 'zod';
import type { ModelEntry } from './model-manifest';

/*
 * The Open Inference Protocol v2 (KServe / Triton REST) as both processes see it: the tensor
 * metadata of a model and the JSON response a job created through `/v2/.../infer` is shown as.
 * The HTTP codec (binary tensors, request checks) lives in the API.
 */

/** The one tensor type Quern's models take and give. */
export const OIP_DATATYPE = 'FP32';

/**
 * The marker in a job's data that it was created through the OIP: its output is then shown as
 * an OIP inference response (`GET /v1/jobs/{id}`, events, webhooks). `id` is the request's `id`.
 */
export const OipJobFormat = z.object({ id: z.string().max(256).optional() });
export type OipJobFormat = z.infer<typeof OipJobFormat>;

export interface OipTensorMetadata {
  name: string;
  datatype: string;
  /** With the batch dimension first, as `-1`. */
  shape: number[];
}

/** A model's input and output tensors as OIP model metadata lists them. */
export function oipTensors(model: ModelEntry): { inputs: OipTensorMetadata[]; outputs: OipTensorMetadata[] } {
  return {
    inputs: [{ name: model.input.name, datatype: OIP_DATATYPE, shape: [-1, model.input.features] }],
    outputs: [{ name: model.output.name, datatype: OIP_DATATYPE, shape: [-1, ...model.output.shape] }],
  };
}

export interface OipOutputTensor {
  name: string;
  datatype: string;
  shape: number[];
  parameters?: Record<string, string | number | boolean>;
  data?: number[];
}

export interface OipInferenceResponse {
  model_name: string;
  model_version: string;
  id?: string;
  parameters?: Record<string, string | number | boolean>;
  outputs: OipOutputTensor[];
}

/** The JSON inference response for output rows (one per input row) of `model`. */
export function oipResponse(
  model: ModelEntry,
  modelVersion: string,
  rows: readonly (readonly number[])[],
  id: string | undefined,
): OipInferenceResponse {
  return {
    model_name: model.name,
    model_version: modelVersion,
    ...(id === undefined ? {} : { id }),
    outputs: [
      {
        name: model.output.name,
        datatype: OIP_DATATYPE,
        shape: [rows.length, ...model.output.shape],
        data: rows.flat(),
      },
    ],
  };
}
