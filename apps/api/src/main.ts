import { serve } from '@hono/node-server';
import {
  type ApiConfig,
  ConfigError,
  createLogger,
  listenFailure,
  loadConfig,
  loadManifest,
  logDestination,
  startTracing,
} from '@quern/shared';
import { createApp } from './app';
import { createServices } from './services/services';

/** Entry point of an API process: config, connections, the HTTP server and a clean shutdown. */
async function main(): Promise<void> {
  let config: ApiConfig;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`quern api: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const logger = createLogger('api', config.LOG_LEVEL, logDestination(config.LOG_FORMAT));
  const manifest = loadManifest(config.QUERN_MODELS_DIR);
  if (!config.QUERN_SECRETS_KEY) {
    // Development only: production refuses to start without it.
    logger.warn('QUERN_SECRETS_KEY is not set: webhook secrets are sealed with the built-in development key');
  }
  // OpenTelemetry only when the OTEL_* variables ask for it; otherwise nothing of it loads.
  const tracing = await startTracing('api');
  if (tracing) logger.info('tracing on (OpenTelemetry, OTLP)');
  const services = createServices(config, manifest, logger, tracing);
  const app = createApp(services, logger);
  // Serve even if Redis is not there yet: /health answers, other routes answer 503 until it is.
  await services.connected(5_000).catch(() => logger.warn('redis not reachable yet; serving 503 until it is'));
  if (config.QUERN_DEV_API_KEY) {
    // Development only (config refuses the variable in production).
    // Stored before the first request when Redis is up now, else as soon as it is.
    const ensured = services.ensureDevKey().then(
      () => logger.info('development API key ready'),
      (err: Error) => logger.warn({ err: err.message }, 'could not store the development key'),
    );
    if (services.redisUp()) await ensured;
  }
  const server = serve({ fetch: app.fetch, hostname: config.HOST, port: config.PORT });
  server.on('listening', () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.PORT;
    logger.info({ host: config.HOST, port }, 'api listening');
  });
  server.on('error', (err) => {
    logger.fatal(...listenFailure(err, 'PORT', config.PORT));
    logger.flush();
    process.exit(1);
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    const grace = config.QUERN_API_SHUTDOWN_GRACE_MS;
    logger.info({ signal, grace_ms: grace }, 'stopping');
    // Stop accepting; requests in flight finish. Sync callers still waiting after the grace get
    // their 202 with the job's Location (the job goes on), and event streams close.
    setTimeout(() => {
      if (services.waiter.size > 0) logger.info({ waiting: services.waiter.size }, 'answering sync waiters with 202');
      services.waiter.drain();
    }, grace).unref();
    setTimeout(() => process.exit(1), grace + 5_000).unref();
    server.close(() => {
      services
        .close()
        .then(() => tracing?.shutdown())
        .catch((err: Error) => logger.warn({ err: err.message }, 'error while stopping'))
        .finally(() => process.exit(0));
    });
    if ('closeIdleConnections' in server) server.closeIdleConnections();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: Error) => {
  process.stderr.write(`quern api: failed to start: ${err.message}\n`);
  process.exit(1);
});
