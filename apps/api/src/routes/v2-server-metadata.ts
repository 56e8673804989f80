import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { API_VERSION } from '../version';
import { OIP_TAG } from './oip-common';

/** The OIP extensions served: binary tensors, Triton's model configuration, and Quern's async infer. */
export const OIP_EXTENSIONS = ['binary_tensor_data', 'model_configuration', 'quern_respond_async'];

export const OipServerMetadataSchema = z
  .object({
    name: z.string(),
    version: z.string(),
    extensions: z.array(z.string()),
  })
  .openapi('OipServerMetadata', { example: { name: 'quern', version: API_VERSION, extensions: OIP_EXTENSIONS } });

export const oipServerMetadataRoute = createRoute({
  operationId: 'oipServerMetadata',
  security: [],
  method: 'get',
  path: '/v2',
  tags: [OIP_TAG],
  summary: 'Server metadata (OIP v2)',
  description: 'The Open Inference Protocol’s server metadata: name, version and the extensions served.',
  responses: {
    200: { description: 'Server metadata.', content: { 'application/json': { schema: OipServerMetadataSchema } } },
  },
});

export function registerOipServerMetadata(app: OpenAPIHono<AppEnv>): void {
  app.openapi(oipServerMetadataRoute, (c) =>
    c.json({ name: 'quern', version: API_VERSION, extensions: OIP_EXTENSIONS }, 200),
  );
}
