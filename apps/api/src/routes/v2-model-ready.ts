import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { OIP_TAG, OipModelParamsSchema, OipModelVersionParamsSchema, oipErrors, oipModel } from './oip-common';

export const OipModelReadySchema = z
  .object({ name: z.string(), ready: z.boolean() })
  .openapi('OipModelReady', { example: { name: 'cars-mpg', ready: true } });

const route = (versioned: boolean) =>
  createRoute({
    operationId: versioned ? 'oipModelVersionReady' : 'oipModelReady',
    security: [],
    method: 'get',
    path: versioned ? '/v2/models/{name}/versions/{version}/ready' : '/v2/models/{name}/ready',
    tags: [OIP_TAG],
    summary: versioned ? 'Model version ready (OIP v2)' : 'Model ready (OIP v2)',
    description:
      'A served model is ready when the server is (`/v2/health/ready`): Redis answers and a worker’s heartbeat ' +
      'was seen recently; every worker serves every model of the manifest.',
    request: { params: versioned ? OipModelVersionParamsSchema : OipModelParamsSchema },
    responses: {
      200: { description: 'Ready.', content: { 'application/json': { schema: OipModelReadySchema } } },
      503: { description: 'Not ready.', content: { 'application/json': { schema: OipModelReadySchema } } },
      ...oipErrors(400, 404),
    },
  });

export const oipModelReadyRoute = route(false);
export const oipModelVersionReadyRoute = route(true);

export function registerOipModelReady(app: OpenAPIHono<AppEnv>): void {
  for (const r of [oipModelReadyRoute, oipModelVersionReadyRoute]) {
    app.openapi(r, async (c) => {
      const model = oipModel(c, c.req.valid('param'));
      const { redis, workers } = await c.get('services').readiness();
      return redis && workers > 0
        ? c.json({ name: model.name, ready: true }, 200)
        : c.json({ name: model.name, ready: false }, 503);
    });
  }
}
