import {
  checkWebhookUrl,
  DEFAULT_WEBHOOK_EVENTS,
  type ModelEntry,
  newId,
  QuernError,
  resolvePublic,
  type WebhookEvent,
  type WebhookSpec,
} from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';
import type { IdempotencyClaim } from '../services/idempotency';

export type JobClaim =
  | {
      jobId: string;
      replayed: false;
      /** The job exists: an Idempotency-Key's record now lives its full TTL. */
      confirm: () => Promise<void>;
      /** Undo the idempotency claim when creating the job fails. */
      release: () => Promise<void>;
    }
  /** An earlier request with the same Idempotency-Key claimed this job id. */
  | { jobId: string; replayed: true; claim: Extract<IdempotencyClaim, { kind: 'replay' }> };

const noop = async () => undefined;

/**
 * Decides the id of the job a request creates: the Idempotency-Key's job when the key was used
 * with the same request before (`replayed`), else a new id; a new job must pass the queue's
 * depth cap first (503 otherwise, nothing enqueued).
 */
export async function claimJob(c: Context<AppEnv>, route: string, body: unknown, model: ModelEntry): Promise<JobClaim> {
  const { idempotency, jobs } = c.get('services');
  const key = c.req.header('idempotency-key');
  if (key === undefined) {
    await jobs.admit(model);
    return { jobId: newId('job'), replayed: false, confirm: noop, release: noop };
  }
  const claim = await idempotency.claim(c.get('principal').id, key, route, body);
  if (claim.kind === 'replay') {
    c.header('idempotent-replayed', 'true');
    return { jobId: claim.jobId, replayed: true, claim };
  }
  try {
    await jobs.admit(model);
  } catch (err) {
    await claim.release().catch(() => undefined);
    throw err;
  }
  return { jobId: claim.jobId, replayed: false, confirm: claim.confirm, release: claim.release };
}

/**
 * Checks a webhook URL before the job is accepted: scheme (https only in production), no
 * credentials, and every address the host resolves to must be public, unless the host is on
 * QUERN_WEBHOOK_ALLOW_HOSTS. The worker checks again when it connects.
 */
export async function validateWebhook(
  c: Context<AppEnv>,
  webhook: { url: string; events?: WebhookEvent[] | undefined } | undefined,
): Promise<WebhookSpec | undefined> {
  if (!webhook) return undefined;
  const { config } = c.get('services');
  const policy = { allowHttp: config.NODE_ENV !== 'production', allowHosts: config.QUERN_WEBHOOK_ALLOW_HOSTS };
  const refuse = (reason: string) =>
    new QuernError('validation_failed', `webhook.url: ${reason}`, {
      errors: [{ field: 'webhook.url', message: reason }],
    });
  const check = checkWebhookUrl(webhook.url, policy);
  if (!check.ok) throw refuse(check.reason);
  if (check.needsResolve) {
    const resolved = await resolvePublic(check.host);
    if (!resolved.ok) throw refuse(resolved.reason);
  }
  return { url: check.url.toString(), events: [...new Set(webhook.events ?? DEFAULT_WEBHOOK_EVENTS)] };
}
