import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { KeySpace } from './keys';
import type { RedisClient as Redis } from './redis';
import type { SecretBox } from './secret-box';
import { TraceCarrier } from './tracing';

/** Events a client can subscribe a webhook to. */
export const WEBHOOK_EVENTS = ['started', 'completed', 'failed', 'canceled'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];
export const DEFAULT_WEBHOOK_EVENTS: WebhookEvent[] = ['completed', 'failed'];

/** A job's webhook as stored in job data: where to send which events. No secret in it. */
export const WebhookSpec = z.object({
  url: z.string().max(2048),
  events: z.array(z.enum(WEBHOOK_EVENTS)).min(1),
});
export type WebhookSpec = z.infer<typeof WebhookSpec>;

/** BullMQ queue of webhook deliveries, sent by the worker app. */
export const WEBHOOK_QUEUE = 'webhooks';
export const WEBHOOK_JOB_NAME = 'deliver';

/** One delivery: the same `webhook_id` on every attempt, so receivers can de-duplicate. */
export const WebhookDeliveryData = z.object({
  v: z.literal(1),
  webhook_id: z.string(),
  owner: z.string(),
  job_id: z.string(),
  model: z.string(),
  event: z.enum(WEBHOOK_EVENTS),
  url: z.string(),
  /** The JSON body, as sent (Standard Webhooks `{type, timestamp, data}`). */
  payload: z.string(),
  request_id: z.string(),
  /** The trace of the job's span in the worker, so each attempt's span joins the request's trace. */
  trace: TraceCarrier.optional(),
});
export type WebhookDeliveryData = z.infer<typeof WebhookDeliveryData>;

/** BullMQ id of one event's delivery: adding it twice (a job run twice) enqueues it once. */
export function deliveryJobId(jobId: string, event: WebhookEvent, attempt?: number): string {
  // A client's retry of a job is a new webhook cycle: its deliveries must not be taken for the first run's.
  return attempt && attempt > 1 ? `${jobId}.${attempt}.${event}` : `${jobId}.${event}`;
}

/**
 * Delay before retry number `attempt` (1-based): the schedule's entry, with a ±20% jitter that is
 * a fixed function of the delivery and the attempt, so the worker can tell the job resource when
 * the next attempt will be, and BullMQ's backoff gives the same answer.
 */
export function webhookRetryDelay(schedule: readonly number[], deliveryId: string, attempt: number): number {
  if (schedule.length === 0) return 0;
  const base = schedule[Math.min(attempt, schedule.length) - 1] ?? 0;
  const h = createHash('sha256').update(`${deliveryId}:${attempt}`).digest();
  const fraction = h.readUInt32BE(0) / 0xffffffff;
  return Math.round(base * (0.8 + 0.4 * fraction));
}

/** Delivery state of one event of one job, shown on the job resource. */
export interface DeliveryState {
  event: WebhookEvent;
  status: 'pending' | 'delivered' | 'retrying' | 'failed' | 'gone';
  attempts: number;
  last_status_code: number | null;
  next_attempt_at: string | null;
  updated_at: string;
}

export async function writeDeliveryState(
  redis: Redis,
  keys: KeySpace,
  jobId: string,
  state: DeliveryState,
  ttlSeconds: number,
): Promise<void> {
  await redis
    .multi()
    .hset(keys.webhookState(jobId), state.event, JSON.stringify(state))
    .expire(keys.webhookState(jobId), ttlSeconds)
    .exec();
}

/**
 * Moves a delivery's `next_attempt_at` when the worker holds it back without an attempt (its
 * receiver's circuit is open), so the job resource says when it will be tried.
 */
export async function rescheduleDeliveryState(
  redis: Redis,
  keys: KeySpace,
  jobId: string,
  event: WebhookEvent,
  nextAttemptAt: Date,
): Promise<void> {
  const raw = await redis.hget(keys.webhookState(jobId), event);
  if (raw === null) return;
  let state: DeliveryState;
  try {
    state = JSON.parse(raw) as DeliveryState;
  } catch {
    return;
  }
  if (state.status !== 'pending' && state.status !== 'retrying') return;
  await redis.hset(
    keys.webhookState(jobId),
    event,
    JSON.stringify({ ...state, next_attempt_at: nextAttemptAt.toISOString() }),
  );
}

export async function readDeliveryStates(redis: Redis, keys: KeySpace, jobId: string): Promise<DeliveryState[]> {
  const hash = await redis.hgetall(keys.webhookState(jobId));
  return Object.values(hash)
    .map((v) => {
      try {
        return JSON.parse(v) as DeliveryState;
      } catch {
        return undefined;
      }
    })
    .filter((s): s is DeliveryState => s !== undefined)
    .sort((a, b) => a.updated_at.localeCompare(b.updated_at));
}

/** A new Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

export interface WebhookSecretView {
  secret: string;
  created_at: string;
  /** During a rotation overlap: until when the previous secret still signs deliveries. */
  previous_expires_at: string | null;
}

/**
 * Each principal's webhook signing secret, sealed with QUERN_SECRETS_KEY in Redis. After a
 * rotation the previous secret keeps signing (both signatures are sent) until the overlap ends,
 * so receivers can switch without dropping a delivery.
 */
export class WebhookSecrets {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly box: SecretBox,
    private readonly overlapSeconds: number,
  ) {}

  /** The principal's secret, created on first use. */
  async get(owner: string): Promise<WebhookSecretView> {
    const key = this.keys.webhookSecret(owner);
    const current = await this.redis.hget(key, 'current');
    if (current === null) {
      const created = { current: this.box.seal(newWebhookSecret()), created_at: String(Date.now()) };
      // HSETNX on the first field: two first uses at once create one secret.
      await this.redis.hsetnx(key, 'current', created.current);
      await this.redis.hsetnx(key, 'created_at', created.created_at);
    }
    return this.view(owner);
  }

  private async view(owner: string): Promise<WebhookSecretView> {
    const hash = await this.redis.hgetall(this.keys.webhookSecret(owner));
    const expires = Number(hash.previous_expires_at ?? 0);
    return {
      secret: this.box.open(hash.current as string),
      created_at: new Date(Number(hash.created_at ?? Date.now())).toISOString(),
      previous_expires_at: hash.previous && expires > Date.now() ? new Date(expires).toISOString() : null,
    };
  }

  async rotate(owner: string): Promise<WebhookSecretView> {
    await this.get(owner);
    const key = this.keys.webhookSecret(owner);
    const current = await this.redis.hget(key, 'current');
    await this.redis.hset(key, {
      current: this.box.seal(newWebhookSecret()),
      created_at: String(Date.now()),
      previous: current ?? '',
      previous_expires_at: String(Date.now() + this.overlapSeconds * 1000),
    });
    return this.view(owner);
  }

  /** Every secret that signs a delivery now: the current one, and the previous during an overlap. */
  async signingSecrets(owner: string): Promise<string[]> {
    const hash = await this.redis.hgetall(this.keys.webhookSecret(owner));
    if (!hash.current) return [(await this.get(owner)).secret];
    const secrets = [this.box.open(hash.current)];
    if (hash.previous && Number(hash.previous_expires_at ?? 0) > Date.now()) secrets.push(this.box.open(hash.previous));
    return secrets;
  }
}
