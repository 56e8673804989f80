import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { checkWebhookUrl, guardedLookup, type UrlPolicy } from '@quern/shared';

export interface PostResult {
  status: number;
}

/** A delivery that could not be made: a refused URL, a network error or the timeout. */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
  ) {
    super(message);
    this.name = 'DeliveryError';
  }
}

const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * POSTs one webhook delivery. The URL is checked again here (the API checked it at submit time),
 * and every address the host resolves to is checked as the socket connects, through the guarded
 * `lookup`; IP literals are checked before. Redirects are not followed: a 3xx is a failed attempt.
 * The whole exchange is bounded by `timeoutMs`; the response body is read (up to 64 KiB) and dropped.
 */
export function postWebhook(
  rawUrl: string,
  body: string,
  headers: Record<string, string>,
  options: { timeoutMs: number; policy: UrlPolicy },
): Promise<PostResult> {
  const check = checkWebhookUrl(rawUrl, options.policy);
  if (!check.ok) return Promise.reject(new DeliveryError(`webhook URL refused: ${check.reason}`, true));
  const { url } = check;
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<PostResult>((resolve, reject) => {
    const req = send(
      url,
      {
        method: 'POST',
        headers: {
          ...headers,
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(body)),
          'user-agent': 'Quern-Webhooks/1.0',
        },
        lookup: guardedLookup(check.allowListed),
        // A fresh connection per delivery: an address checked once is never reused for another host.
        agent: false,
      },
      (res) => {
        let received = 0;
        res.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received > MAX_RESPONSE_BYTES) res.destroy();
        });
        res.on('close', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0 });
        });
        res.on('error', () => undefined);
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new DeliveryError(`no answer within ${options.timeoutMs} ms`, false));
    }, options.timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err instanceof DeliveryError) reject(err);
      else if (err.code === 'ESSRF') reject(new DeliveryError(err.message, true));
      else reject(new DeliveryError(`connection failed: ${err.code ?? err.message}`, false));
    });
    req.end(body);
  });
}
