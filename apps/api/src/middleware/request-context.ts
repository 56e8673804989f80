import { accessLogger, type Logger, newId, TraceFlags } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import type { Services } from '../services/services';
import { presetHeaders, readHeadersFromNode } from './node-headers';

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{8,64}$/;

/** Routes that orchestrators and Prometheus call every few seconds. */
const PROBES = new Set(['/health', '/ready', '/metrics']);

/**
 * The request's logger, made on first use: a pino child (with the redaction rules) costs more
 * than most requests spend logging, and most requests log only their one line, written by this
 * middleware with the root logger. With tracing on, its lines carry the trace id too.
 */
function lazyChild(logger: Logger, requestId: string, c: { get(key: 'traceId'): string | undefined }): Logger {
  let child: Logger | undefined;
  return new Proxy({} as Logger, {
    get(_target, property) {
      if (!child) {
        const traceId = c.get('traceId');
        child = logger.child(traceId ? { request_id: requestId, trace_id: traceId } : { request_id: requestId });
      }
      const value = Reflect.get(child, property, child);
      return typeof value === 'function' ? value.bind(child) : value;
    },
  });
}

/**
 * First middleware of every request: sets the request id (a caller's `X-Request-Id` if it is
 * safe to log, else a new `req_…`), the services and a child logger, then writes one log line
 * (after the response is sent; at debug level for probes) and the HTTP metrics when the response
 * is done.
 */
export function requestContext(services: Services, logger: Logger) {
  const access = accessLogger(logger);
  return createMiddleware<AppEnv>(async (c, next) => {
    const started = performance.now();
    readHeadersFromNode(c);
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && SAFE_REQUEST_ID.test(incoming) ? incoming : newId('req');
    c.set('requestId', requestId);
    c.set('services', services);
    c.set('logger', lazyChild(logger, requestId, c));
    // Before the handler, so whatever response it builds carries it.
    presetHeaders(c, { 'x-request-id': requestId });
    try {
      await next();
    } finally {
      const seconds = (performance.now() - started) / 1000;
      // Route templates (`/v1/jobs/:id`), not raw paths, keep label cardinality bounded.
      const route = c.req.routePath && c.req.routePath !== '/*' ? c.req.routePath : 'unmatched';
      const status = c.res.status;
      services.metrics.httpRequests.labels(c.req.method, route, String(status)).inc();
      const traceId = c.get('traceId');
      // (The span has ended by now: its sampled flag, not isRecording(), says whether it was kept.)
      if (traceId && ((c.get('span')?.spanContext().traceFlags ?? 0) & TraceFlags.SAMPLED) !== 0) {
        // A sampled trace: the bucket keeps this request's trace id as its exemplar.
        services.metrics.httpDuration.observe({
          labels: { method: c.req.method, route },
          value: seconds,
          exemplarLabels: { trace_id: traceId },
        });
      } else services.metrics.httpDuration.labels(c.req.method, route).observe(seconds);
      // Probes and scrapes come every few seconds: their lines are debug ones.
      const probe = PROBES.has(route);
      if (!probe || logger.isLevelEnabled('debug')) {
        const principal = c.get('principal');
        const line = {
          request_id: requestId,
          method: c.req.method,
          route,
          status,
          duration_ms: Math.round(seconds * 1e6) / 1e3,
          principal_id: principal?.id,
          key_prefix: principal?.keyPrefix,
          trace_id: traceId,
        };
        // Written after the response has gone out: the line is for the operator, not the caller.
        setImmediate(() => (probe ? access.debug(line, 'request') : access.info(line, 'request')));
      }
    }
  });
}
