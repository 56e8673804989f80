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
import type { FoundJob } from '../services/job-service';

export interface JobClaim {
  jobId: string;
  /** An earlier request with the same Idempotency-Key created this job. */
  replayed: boolean;
  /** Undo the idempotency claim when creating the job fails. */
  release: () => Promise<void>;
}

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
    return { jobId: newId('job'), replayed: false, release: noop };
  }
  const claim = await idempotency.claim(c.get('principal').id, key, route, body);
  if (claim.kind === 'replay') {
    c.header('idempotent-replayed', 'true');
    return { jobId: claim.jobId, replayed: true, release: noop };
  }
  try {
    await jobs.admit(model);
  } catch (err) {
    await claim.release();
    throw err;
  }
  return { jobId: claim.jobId, replayed: false, release: claim.release };
}

/**
 * The job an earlier request with the same Idempotency-Key created. It may still be on its way
 * into the queue (that request claimed the key a moment ago), so look for it for a short while.
 */
export async function findReplayedJob(c: Context<AppEnv>, jobId: string): Promise<FoundJob> {
  const { jobs } = c.get('services');
  const owner = c.get('principal').id;
  const deadline = Date.now() + 5_000;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    const found = await jobs.find(jobId, owner);
    if (found) return found;
    if (Date.now() > deadline) {
      throw new QuernError('service_unavailable', 'the request with this Idempotency-Key is still being processed', {
        headers: { 'retry-after': '1' },
      });
    }
    await new Promise((r) => setTimeout(r, delay));
  }
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
