import { requestParent, SpanKind, SpanStatusCode, type Tracer, trace } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';

/**
 * The server span of every request, installed only when tracing is on. An incoming W3C
 * `traceparent` makes the request's span a child of the caller's; the request id goes on the
 * span and the trace id on the request's access line, so each finds the other. The span's
 * context is handed on explicitly (`traceContext`): a job the request submits gets its enqueue
 * span as the span's child.
 */
export function traceRequests(tracer: Tracer) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const parent = requestParent(c.req.raw.headers);
    const span = tracer.startSpan(
      c.req.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': c.req.method,
          'url.path': c.req.path,
          'quern.request_id': c.get('requestId'),
        },
      },
      parent,
    );
    const ctx = trace.setSpan(parent, span);
    c.set('span', span);
    c.set('traceContext', ctx);
    c.set('traceId', span.spanContext().traceId);
    try {
      await next();
    } finally {
      const route = c.req.routePath && c.req.routePath !== '/*' ? c.req.routePath : 'unmatched';
      const status = c.res.status;
      span.updateName(`${c.req.method} ${route}`);
      span.setAttribute('http.route', route);
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
  });
}
