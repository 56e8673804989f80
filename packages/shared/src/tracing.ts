import {
  type Context,
  type ContextManager,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { z } from 'zod';

export type { Context as TraceContext, Link, Span, SpanContext, Tracer } from '@opentelemetry/api';
export { SpanKind, SpanStatusCode, TraceFlags, trace };

/**
 * A W3C trace context as it travels inside a job (and a webhook delivery), so the worker's spans
 * join the trace of the request that made the job. Checked on both sides like the rest of the
 * job: a malformed one is refused with the job, never half-parsed.
 */
export const TraceCarrier = z.object({
  traceparent: z.string().regex(/^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/),
  tracestate: z.string().max(512).optional(),
});
export type TraceCarrier = z.infer<typeof TraceCarrier>;

/** The OpenTelemetry SDK of one process, when tracing is on. */
export interface Tracing {
  tracer: Tracer;
  /** Sends the spans still buffered (on shutdown). */
  shutdown(): Promise<void>;
}

/**
 * Whether the standard variables ask for traces: an OTLP endpoint is set (for all signals or for
 * traces), `OTEL_SDK_DISABLED` is not `true` and `OTEL_TRACES_EXPORTER` is not `none`.
 */
export function tracingWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  if (env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === 'none') return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/**
 * Starts the OpenTelemetry SDK for Node when the standard variables ask for it, else does nothing
 * and loads nothing: the SDK is imported only here, so a process without an endpoint never loads
 * it, and the request and job paths see `undefined` and skip every tracing step. The SDK reads
 * its settings from the standard variables itself (`OTEL_EXPORTER_OTLP_ENDPOINT`,
 * `OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf` or `http/json`, `OTEL_TRACES_SAMPLER` and
 * `_ARG`, `OTEL_SERVICE_NAME`, default `quern-api` or `quern-worker`, `OTEL_RESOURCE_ATTRIBUTES`).
 * No automatic instrumentation: Quern makes its own spans where they say something (the
 * request, the enqueue, the job, the batch, the reply, each webhook attempt); a span per Redis
 * command would cost more than the request it describes.
 */
export async function startTracing(
  service: 'api' | 'worker',
  env: NodeJS.ProcessEnv = process.env,
): Promise<Tracing | undefined> {
  if (!tracingWanted(env)) return undefined;
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({
    ...(env.OTEL_SERVICE_NAME ? {} : { serviceName: `quern-${service}` }),
    instrumentations: [],
    contextManager: new ExplicitContexts(),
  });
  sdk.start();
  return { tracer: trace.getTracer(`quern-${service}`), shutdown: () => sdk.shutdown() };
}

/**
 * Trace contexts are passed by hand in Quern (the request's span to its job's enqueue, the job's
 * context to the worker's spans), never looked up implicitly. The SDK's default context manager
 * is AsyncLocalStorage, which on Node 20 hooks every promise of the process, a cost on every
 * request whether or not it is sampled; this one keeps no implicit context at all.
 */
class ExplicitContexts implements ContextManager {
  active(): Context {
    return ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    _context: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return fn.call(thisArg, ...args);
  }

  bind<T>(_context: Context, target: T): T {
    return target;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    return this;
  }
}

const carrierGetter: TextMapGetter<TraceCarrier> = {
  get: (carrier, key) => (key === 'traceparent' || key === 'tracestate' ? carrier[key] : undefined),
  keys: () => ['traceparent', 'tracestate'],
};

/** The trace context `ctx` as a carrier to put in a job (undefined when it holds no span). */
export function carrierOf(ctx: Context): TraceCarrier | undefined {
  const out: Record<string, string> = {};
  propagation.inject(ctx, out);
  if (!out.traceparent) return undefined;
  return out.tracestate
    ? { traceparent: out.traceparent, tracestate: out.tracestate }
    : { traceparent: out.traceparent };
}

/** The trace context a job's carrier holds, to parent spans in. */
export function contextOf(carrier: TraceCarrier): Context {
  return propagation.extract(ROOT_CONTEXT, carrier, carrierGetter);
}

/** The span context a carrier names, for links. */
export function spanContextOf(carrier: TraceCarrier): SpanContext | undefined {
  return trace.getSpanContext(contextOf(carrier));
}

/** The trace id of a carrier, for log lines. */
export function traceIdOf(carrier: TraceCarrier): string {
  return carrier.traceparent.slice(3, 35);
}

/** Reads an incoming request's `traceparent` and `tracestate` from Fetch API headers. */
export const headersGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
};

/** The parent context of an incoming request: its W3C `traceparent`, if any. */
export function requestParent(headers: Headers): Context {
  return propagation.extract(ROOT_CONTEXT, headers, headersGetter);
}

/** A span ended with the error status (the exception recorded without its message text leaking elsewhere). */
export function failSpan(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR });
}

/** Parent context made of one span (for spans started outside the span's async scope). */
export function withSpan(span: Span): Context {
  return trace.setSpan(ROOT_CONTEXT, span);
}

/** A link to a span, with attributes saying why. */
export function linkTo(target: SpanContext, attributes?: Link['attributes']): Link {
  return attributes ? { context: target, attributes } : { context: target };
}

/** The empty trace context: a span started in it begins a trace of its own. */
export const ROOT_TRACE_CONTEXT: Context = ROOT_CONTEXT;
