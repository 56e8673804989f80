import type { Logger, Span, TraceContext } from '@quern/shared';
import type { Principal } from './services/principal';
import type { Services } from './services/services';

/** Typed context of every request: handlers read collaborators with `c.get('services')`. */
export interface AppEnv {
  Variables: {
    services: Services;
    requestId: string;
    logger: Logger;
    /** Set by the auth middleware on protected routes. */
    principal: Principal;
    /**
     * On routes whose rate limit is checked in the handler (`deferRateLimit`): resolves when the
     * request is within its budgets, throws the 429 otherwise. See `admitted`.
     */
    rateLimit: (() => Promise<void>) | undefined;
    /** The request's server span, its context and trace id: set only when tracing is on. */
    span: Span | undefined;
    traceContext: TraceContext | undefined;
    traceId: string | undefined;
  };
}
