import { OpenAPIHono } from '@hono/zod-openapi';
import { type Logger, QuernError } from '@quern/shared';
import { cors } from 'hono/cors';
import type { AppEnv } from './env';
import { problem, toQuernError, validationError } from './errors';
import { methodsServed } from './method-not-allowed';
import { bodyLimit } from './middleware/body-limit';
import { requestContext } from './middleware/request-context';
import { securityHeaders } from './middleware/security-headers';
import { traceRequests } from './middleware/tracing';
import { registerQueueDashboard } from './routes/admin-queues';
import { registerDocs } from './routes/docs';
import { registerHealth } from './routes/health';
import { registerMetrics } from './routes/metrics';
import { registerReady } from './routes/ready';
import { registerRoot } from './routes/root';
import { registerCreateKey } from './routes/v1-admin-keys-create';
import { registerGetKey } from './routes/v1-admin-keys-get';
import { registerListKeys } from './routes/v1-admin-keys-list';
import { registerRevokeKey } from './routes/v1-admin-keys-revoke';
import { registerUpdateKey } from './routes/v1-admin-keys-update';
import { registerKeyUsage } from './routes/v1-admin-keys-usage';
import { registerLoadVersion } from './routes/v1-admin-models-load';
import { registerSetRouting } from './routes/v1-admin-models-routing';
import { registerUnloadVersion } from './routes/v1-admin-models-unload';
import { registerAuthToken } from './routes/v1-auth-token';
import { registerBatchPredict } from './routes/v1-batch-predict';
import { registerCancelJob } from './routes/v1-jobs-cancel';
import { registerCreateJob } from './routes/v1-jobs-create';
import { registerJobEvents } from './routes/v1-jobs-events';
import { registerGetJob } from './routes/v1-jobs-get';
import { registerListJobs } from './routes/v1-jobs-list';
import { registerRetryJob } from './routes/v1-jobs-retry';
import { registerGetModel } from './routes/v1-models-get';
import { registerListModels } from './routes/v1-models-list';
import { registerGetModelVersion } from './routes/v1-models-versions-get';
import { registerListModelVersions } from './routes/v1-models-versions-list';
import { registerPredict } from './routes/v1-predict';
import { registerUsage } from './routes/v1-usage';
import { registerWebhookSecret } from './routes/v1-webhooks-secret';
import { registerOipLive } from './routes/v2-health-live';
import { registerOipReady } from './routes/v2-health-ready';
import { registerOipInfer } from './routes/v2-infer';
import { registerOipModelConfig } from './routes/v2-model-config';
import { registerOipModelMetadata } from './routes/v2-model-metadata';
import { registerOipModelReady } from './routes/v2-model-ready';
import { registerOipServerMetadata } from './routes/v2-server-metadata';
import type { Services } from './services/services';
import { API_VERSION } from './version';

export { API_VERSION };

/**
 * Builds the HTTP app with its error handler, validation hook and OpenAPI document. It opens
 * no sockets and starts nothing: `main.ts` does that, tests call `app.request()`.
 */
export function createApp(services: Services, logger: Logger): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) return problem(c, validationError(result.error, result.target));
      return undefined;
    },
  });

  app.use('*', requestContext(services, logger));
  // Only with tracing on: otherwise no request pays for a span, a context or a header read.
  if (services.tracing) app.use('*', traceRequests(services.tracing.tracer));
  app.use('*', securityHeaders());
  const origins = services.config.QUERN_CORS_ORIGINS;
  if (origins.length > 0) {
    app.use(
      '*',
      cors({
        // A list of origins, or any origin; never with credentials (keys travel in headers, not cookies).
        origin: origins.includes('*') ? '*' : origins,
        credentials: false,
        allowMethods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
        allowHeaders: [
          'Content-Type',
          'Authorization',
          'X-API-Key',
          'Idempotency-Key',
          'Prefer',
          'X-Request-Id',
          'Last-Event-ID',
          'Inference-Header-Content-Length',
        ],
        exposeHeaders: [
          'Location',
          'RateLimit',
          'RateLimit-Policy',
          'Retry-After',
          'X-Request-Id',
          'Preference-Applied',
          'Idempotent-Replayed',
          'Quern-Job-Row',
          'Inference-Header-Content-Length',
          // RFC 9745 on the tutorial's deprecated paths, and the successor route they name.
          'Deprecation',
          'Link',
        ],
        maxAge: 600,
      }),
    );
  }
  app.use('*', bodyLimit(services.config.QUERN_BODY_LIMIT_BYTES));

  app.onError((err, c) => {
    // An unexpected error while Redis is down is an outage (503), not a bug (500).
    const quernError = toQuernError(err, services.redisUp());
    if (quernError.status >= 500) {
      // The stack goes to the log, never to the client.
      c.get('logger')?.error({ err, code: quernError.code }, 'request failed');
    }
    return problem(c, quernError);
  });
  const allowedOn = methodsServed(() => app.routes);
  app.notFound((c) => {
    const allowed = allowedOn(c.req.path);
    if (allowed.length > 0 && !allowed.includes(c.req.method)) {
      return problem(
        c,
        new QuernError('method_not_allowed', `${c.req.method} is not served on ${c.req.path}`, {
          headers: { allow: allowed.join(', ') },
        }),
      );
    }
    return problem(c, new QuernError('not_found', `no route for ${c.req.method} ${c.req.path}`));
  });

  app.openAPIRegistry.registerComponent('securitySchemes', 'ApiKeyAuth', {
    type: 'apiKey',
    in: 'header',
    name: 'X-API-Key',
    description: 'An API key.',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'BearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'API key or JWT',
    description: 'An API key, or an access token from POST /v1/auth/token.',
  });

  // Every route, in one readable place.
  registerRoot(app);
  registerHealth(app);
  registerReady(app);
  registerMetrics(app);
  registerDocs(app);
  registerListModels(app);
  registerGetModel(app);
  registerListModelVersions(app);
  registerGetModelVersion(app);
  registerCreateJob(app);
  registerGetJob(app);
  registerCancelJob(app);
  registerRetryJob(app);
  registerListJobs(app);
  registerUsage(app);
  registerJobEvents(app);
  registerPredict(app);
  registerBatchPredict(app);
  registerWebhookSecret(app);
  registerAuthToken(app);
  registerCreateKey(app);
  registerListKeys(app);
  registerGetKey(app);
  registerRevokeKey(app);
  registerLoadVersion(app);
  registerUnloadVersion(app);
  registerSetRouting(app);
  registerUpdateKey(app);
  registerKeyUsage(app);
  // The Open Inference Protocol v2 (KServe / Triton REST) over the same queue.
  registerOipServerMetadata(app);
  registerOipLive(app);
  registerOipReady(app);
  registerOipModelMetadata(app);
  registerOipModelReady(app);
  registerOipModelConfig(app);
  registerOipInfer(app);
  registerQueueDashboard(app, services);

  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'Quern',
      version: API_VERSION,
      description:
        'Queue-based inference for ONNX models: submit jobs and poll them, or predict and wait. ' +
        'Errors are RFC 9457 problem+json with a stable `code`.',
      // OpenAPI 3.1's SPDX `identifier` (the generator's types only know 3.0's fields).
      license: { name: 'Proprietary', identifier: 'LicenseRef-Proprietary' } as { name: string },
    },
    servers: [{ url: '/' }],
    tags: [
      { name: 'Predict', description: 'Synchronous predictions that wait for their job.' },
      { name: 'Jobs', description: 'Asynchronous jobs: submit, then poll.' },
      { name: 'Models', description: 'The models served.' },
      { name: 'Webhooks', description: 'Signing secrets of webhook deliveries (Standard Webhooks).' },
      { name: 'Auth', description: 'Access tokens for API keys.' },
      { name: 'Admin', description: 'API key management (needs the admin scope).' },
      {
        name: 'Open Inference Protocol',
        description:
          'KServe / Triton REST (Open Inference Protocol v2) over the same queue, keys and limits; errors carry `error`.',
      },
      { name: 'Operations', description: 'Health, readiness and metrics.' },
    ],
  });
  return app;
}
