import { Webhook } from 'standardwebhooks';
import type { components } from './schema';
import type { Job } from './types';

type WebhookEventName = NonNullable<components['schemas']['WebhookRequest']['events']>[number];

/** The body of a webhook delivery: `job.completed` and so on, with the job resource as `data`. */
export interface WebhookEvent {
  type: `job.${WebhookEventName}`;
  /** When the event was made (ISO 8601); the `webhook-timestamp` header says when it was signed. */
  timestamp: string;
  data: Job;
}

/** Request headers as Fetch (`Headers`) or Node's `http` (`IncomingHttpHeaders`) give them. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

/**
 * Verifies a delivery per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
 * `webhook-signature`) against the secret of `GET /v1/webhooks/secret` and returns its event.
 * Throws when the signature does not match or the timestamp is more than 5 minutes off. Pass the
 * body exactly as received (the raw text, not parsed and re-serialised JSON). During a secret
 * rotation each delivery carries both signatures, so either secret verifies it.
 */
export function verifyWebhook(rawBody: string, headers: WebhookHeaders, secret: string): WebhookEvent {
  const get = (name: string): string => {
    const value = headers instanceof Headers ? headers.get(name) : headers[name];
    return (Array.isArray(value) ? value[0] : value) ?? '';
  };
  const event = new Webhook(secret).verify(rawBody, {
    'webhook-id': get('webhook-id'),
    'webhook-timestamp': get('webhook-timestamp'),
    'webhook-signature': get('webhook-signature'),
  });
  return event as WebhookEvent;
}
