import {
  ConfigError,
  createLogger,
  listenFailure,
  loadConfig,
  loadManifest,
  logDestination,
  startTracing,
  type WorkerConfig,
} from '@quern/shared';
import { createWorkerHttpApp, serveWorkerHttp } from './http-server';
import { WorkerRuntime } from './worker-runtime';

/** Entry point of a worker process: config, models, consumers, the metrics port and signals. */
async function main(): Promise<void> {
  let config: WorkerConfig;
  try {
    config = loadConfig(process.env, 'worker');
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`quern worker: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const logger = createLogger('worker', config.LOG_LEVEL, logDestination(config.LOG_FORMAT));
  const manifest = loadManifest(config.QUERN_MODELS_DIR);
  if (!config.QUERN_SECRETS_KEY) {
    // Development only: production refuses to start without it.
    logger.warn('QUERN_SECRETS_KEY is not set: webhook secrets are sealed with the built-in development key');
  }
  // The health port comes first: a worker waiting for Redis is alive (health) but not ready (ready).
  let runtime: WorkerRuntime | undefined;
  const server = serveWorkerHttp(
    createWorkerHttpApp({ registry: () => runtime?.metrics.registry, isReady: () => runtime?.isReady() === true }),
    config.HOST,
    config.QUERN_WORKER_PORT,
  );
  server.on('listening', () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.QUERN_WORKER_PORT;
    logger.info({ port }, 'worker metrics listening');
  });
  server.on('error', (err: NodeJS.ErrnoException) => {
    logger.fatal(...listenFailure(err, 'QUERN_WORKER_PORT', config.QUERN_WORKER_PORT));
    logger.flush();
    process.exit(1);
  });
  // OpenTelemetry only when the OTEL_* variables ask for it; otherwise nothing of it loads.
  const tracing = await startTracing('worker');
  if (tracing) logger.info('tracing on (OpenTelemetry, OTLP)');
  runtime = await WorkerRuntime.start({ config, manifest, logger, tracing });
  const started = runtime;

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, timeout_ms: config.QUERN_SHUTDOWN_TIMEOUT_MS }, 'draining');
    // Hard deadline: whatever happens, exit shortly after the drain timeout.
    setTimeout(() => {
      logger.error('drain did not finish in time: exiting');
      process.exit(1);
    }, config.QUERN_SHUTDOWN_TIMEOUT_MS + 5_000).unref();
    started
      .close()
      .then(async ({ forced }) => {
        logger.info({ forced }, 'worker stopped');
        server.close();
        // The last spans go out before the process does.
        await tracing?.shutdown().catch((err: Error) => logger.warn({ err: err.message }, 'spans not flushed'));
        process.exit(forced ? 1 : 0);
      })
      .catch((err: Error) => {
        logger.error({ err: err.message }, 'error while stopping');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: Error) => {
  process.stderr.write(`quern worker: failed to start: ${err.message}\n`);
  process.exit(1);
});
