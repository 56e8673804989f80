import { QuernError } from '@quern/shared';
import { bodyLimit as honoBodyLimit } from 'hono/body-limit';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';

/**
 * The request body limit (413), for bodies with `Content-Length` and chunked ones alike.
 *
 * With a `Content-Length` (and no `Transfer-Encoding`) the header alone decides and the body is
 * left alone, so @hono/node-server can later read it straight from the socket; Hono's own
 * `bodyLimit` touches `request.body`, which makes the server build a full WHATWG Request and
 * stream for every request. Chunked bodies go through Hono's limiter, which counts as it reads.
 */
export function bodyLimit(maxSize: number) {
  const tooLarge = () => {
    throw new QuernError('payload_too_large', `the request body exceeds ${maxSize} bytes`);
  };
  const counting = honoBodyLimit({ maxSize, onError: tooLarge });
  return createMiddleware<AppEnv>(async (c, next) => {
    const method = c.req.method;
    if (method === 'GET' || method === 'HEAD') return next();
    const length = c.req.header('content-length');
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      if (Number(length) > maxSize) tooLarge();
      return next();
    }
    return counting(c, next);
  });
}
