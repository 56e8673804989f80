import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { type ModelEntry, oipTensors } from '@quern/shared';
import type { AppEnv } from '../env';
import { OIP_TAG, OipModelParamsSchema, OipModelVersionParamsSchema, oipErrors, oipModel } from './oip-common';

const TensorMetadataSchema = z
  .object({
    name: z.string(),
    datatype: z.string().openapi({ example: 'FP32' }),
    shape: z.array(z.number().int()).openapi({ description: 'The batch dimension first, as -1.', example: [-1, 6] }),
  })
  .openapi('OipTensorMetadata');

export const OipModelMetadataSchema = z
  .object({
    name: z.string(),
    versions: z.array(z.string()),
    platform: z.string(),
    inputs: z.array(TensorMetadataSchema),
    outputs: z.array(TensorMetadataSchema),
  })
  .openapi('OipModelMetadata', {
    example: {
      name: 'cars-mpg',
      versions: ['1.0.0'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 6] }],
      outputs: [{ name: 'mpg', datatype: 'FP32', shape: [-1, 1] }],
    },
  });

/** A model's OIP metadata. */
export function oipModelMetadata(model: ModelEntry) {
  return { name: model.name, versions: [model.version], platform: 'onnxruntime_onnx', ...oipTensors(model) };
}

const route = (versioned: boolean) =>
  createRoute({
    operationId: versioned ? 'oipModelVersionMetadata' : 'oipModelMetadata',
    security: [],
    method: 'get',
    path: versioned ? '/v2/models/{name}/versions/{version}' : '/v2/models/{name}',
    tags: [OIP_TAG],
    summary: versioned ? 'Model version metadata (OIP v2)' : 'Model metadata (OIP v2)',
    description: 'The model’s input and output tensors: name, datatype and shape, the batch dimension as -1.',
    request: { params: versioned ? OipModelVersionParamsSchema : OipModelParamsSchema },
    responses: {
      200: { description: 'Model metadata.', content: { 'application/json': { schema: OipModelMetadataSchema } } },
      ...oipErrors(400, 404),
    },
  });

export const oipModelMetadataRoute = route(false);
export const oipModelVersionMetadataRoute = route(true);

export function registerOipModelMetadata(app: OpenAPIHono<AppEnv>): void {
  for (const r of [oipModelMetadataRoute, oipModelVersionMetadataRoute]) {
    app.openapi(r, (c) => c.json(oipModelMetadata(oipModel(c, c.req.valid('param'))), 200));
  }
}
