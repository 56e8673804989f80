import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { ModelEntry } from '@quern/shared';
import type { AppEnv } from '../env';
import { OIP_TAG, OipModelParamsSchema, OipModelVersionParamsSchema, oipErrors, oipModel } from './oip-common';

const TensorConfigSchema = z
  .object({
    name: z.string(),
    data_type: z.string().openapi({ example: 'TYPE_FP32' }),
    dims: z.array(z.number().int()).openapi({ description: 'Without the batch dimension.', example: [6] }),
  })
  .openapi('TritonTensorConfig');

export const TritonModelConfigSchema = z
  .object({
    name: z.string(),
    platform: z.string(),
    backend: z.string(),
    max_batch_size: z.number().int(),
    input: z.array(TensorConfigSchema),
    output: z.array(TensorConfigSchema),
    dynamic_batching: z.object({
      max_queue_delay_microseconds: z.number().int().openapi({ description: 'The model’s `max_delay_ms`, in µs.' }),
    }),
  })
  .openapi('TritonModelConfig', {
    example: {
      name: 'cars-mpg',
      platform: 'onnxruntime_onnx',
      backend: 'onnxruntime',
      max_batch_size: 256,
      input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [6] }],
      output: [{ name: 'mpg', data_type: 'TYPE_FP32', dims: [1] }],
      dynamic_batching: { max_queue_delay_microseconds: 0 },
    },
  });

/** A model's configuration as Triton's model-configuration extension gives it (perf_analyzer reads it). */
export function tritonModelConfig(model: ModelEntry) {
  return {
    name: model.name,
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    max_batch_size: model.batching.max_batch_size,
    input: [{ name: model.input.name, data_type: 'TYPE_FP32', dims: [model.input.features] }],
    output: [{ name: model.output.name, data_type: 'TYPE_FP32', dims: [...model.output.shape] }],
    dynamic_batching: { max_queue_delay_microseconds: model.batching.max_delay_ms * 1000 },
  };
}

const route = (versioned: boolean) =>
  createRoute({
    operationId: versioned ? 'oipModelVersionConfig' : 'oipModelConfig',
    security: [],
    method: 'get',
    path: versioned ? '/v2/models/{name}/versions/{version}/config' : '/v2/models/{name}/config',
    tags: [OIP_TAG],
    summary: versioned ? 'Model version configuration (Triton)' : 'Model configuration (Triton)',
    description:
      'Triton’s model-configuration extension: `max_batch_size`, the tensors’ `dims` without the batch ' +
      'dimension, and `dynamic_batching` (the workers batch every model dynamically).',
    request: { params: versioned ? OipModelVersionParamsSchema : OipModelParamsSchema },
    responses: {
      200: {
        description: 'The model configuration.',
        content: { 'application/json': { schema: TritonModelConfigSchema } },
      },
      ...oipErrors(400, 404),
    },
  });

export const oipModelConfigRoute = route(false);
export const oipModelVersionConfigRoute = route(true);

export function registerOipModelConfig(app: OpenAPIHono<AppEnv>): void {
  for (const r of [oipModelConfigRoute, oipModelVersionConfigRoute]) {
    app.openapi(r, (c) => c.json(tritonModelConfig(oipModel(c, c.req.valid('param'))), 200));
  }
}
