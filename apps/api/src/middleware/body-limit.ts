import { QuernError } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';

/** How much of a body over the limit is still read (and dropped) so the connection stays usable. */
const DRAIN_BYTES = 1024 * 1024;
const DRAIN_MS = 1_000;

/**
 * The request body limit (413), for bodies with `Content-Length` and chunked ones alike.
 *
 * With a `Content-Length` (and no `Transfer-Encoding`) the header alone decides and the body is
 * left alone, so @hono/node-server can later read it straight from the socket (reading
 * `request.body` here would make the server build a full WHATWG Request and stream for every
 * request). Node reads and drops the unread body of a 413 and keeps the connection, unless it is
 * more than `DRAIN_BYTES` over the limit: then the 413 says `Connection: close`.
 *
 * Chunked bodies are counted as they are read. One over the limit is read on to its end, if that
 * end comes within `DRAIN_BYTES` more and `DRAIN_MS`, so the 413 leaves a clean connection the
 * client can send its next request on; otherwise the 413 says `Connection: close` and the
 * connection ends with it. (Left half-read, the body stalled the server's own drain and the
 * server reset the kept-alive connection, failing the client's next request.)
 */
export function bodyLimit(maxSize: number) {
  const tooLarge = (headers?: Record<string, string>) =>
    new QuernError('payload_too_large', `the request body exceeds ${maxSize} bytes`, headers ? { headers } : {});
  return createMiddleware<AppEnv>(async (c, next) => {
    const method = c.req.method;
    if (method === 'GET' || method === 'HEAD') return next();
    const length = c.req.header('content-length');
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      const declared = Number(length);
      if (declared > maxSize + DRAIN_BYTES) throw tooLarge({ connection: 'close' });
      if (declared > maxSize) throw tooLarge();
      return next();
    }
    const body = c.req.raw.body;
    if (!body) return next();
    const reader = body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxSize) {
        if (await drained(reader)) throw tooLarge();
        reader.cancel().catch(() => undefined);
        throw tooLarge({ connection: 'close' });
      }
      chunks.push(value);
    }
    c.req.raw = new Request(c.req.raw, { body: Buffer.concat(chunks, size) });
    return next();
  });
}

/** Reads and drops the rest of a body; true if it ended within the drain bounds. */
async function drained(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeUp = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), DRAIN_MS);
  });
  try {
    let left = DRAIN_BYTES;
    for (;;) {
      const read = await Promise.race([reader.read(), timeUp]);
      if (read === 'late') return false;
      if (read.done) return true;
      left -= read.value.byteLength;
      if (left < 0) return false;
    }
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
