import type { Queue } from 'bullmq';
import type { CommonConfig } from './config';
import { newId } from './ids';
import { type JobSnapshot, jobView } from './job-view';
import type { InferenceJobData } from './jobs';
import type { KeySpace } from './keys';
import type { ModelEntry } from './model-manifest';
import type { RedisClient } from './redis';
import {
  type DeliveryState,
  deliveryJobId,
  WEBHOOK_JOB_NAME,
  type WebhookDeliveryData,
  type WebhookEvent,
} from './webhooks';

/**
 * Puts a job's webhook events on the webhooks queue. The delivery's BullMQ id is the job id and
 * the event, so a job run twice (after a stall) enqueues each event once, and its `webhook_id`
 * (fixed in the delivery's data) stays the same on every attempt.
 */
export class WebhookDispatcher {
  constructor(
    private readonly queue: Queue,
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly config: CommonConfig,
  ) {}

  wants(data: InferenceJobData, event: WebhookEvent): boolean {
    return data.webhook?.events.includes(event) === true;
  }

  async enqueue(snapshot: JobSnapshot, model: ModelEntry, event: WebhookEvent): Promise<void> {
    const { data } = snapshot;
    if (!data.webhook || !this.wants(data, event)) return;
    const now = new Date();
    const delivery: WebhookDeliveryData = {
      v: 1,
      webhook_id: newId('evt'),
      owner: data.owner,
      job_id: snapshot.id,
      model: data.model,
      event,
      url: data.webhook.url,
      payload: JSON.stringify({ type: `job.${event}`, timestamp: now.toISOString(), data: jobView(snapshot, model) }),
      request_id: data.request_id,
      ...(data.trace ? { trace: data.trace } : {}),
    };
    const retention = this.config.QUERN_RETAIN_FAILED_SECONDS;
    await this.queue.add(WEBHOOK_JOB_NAME, delivery, {
      jobId: deliveryJobId(snapshot.id, event, data.attempt),
      attempts: this.config.QUERN_WEBHOOK_RETRY_SCHEDULE_MS.length + 1,
      backoff: { type: 'webhook' },
      removeOnComplete: { age: retention },
      removeOnFail: { age: retention },
    });
    const state: DeliveryState = {
      event,
      status: 'pending',
      attempts: 0,
      last_status_code: null,
      next_attempt_at: now.toISOString(),
      updated_at: now.toISOString(),
    };
    // HSETNX: a second enqueue of the same event (a job run twice) does not reset a delivery in progress.
    await this.redis
      .multi()
      .hsetnx(this.keys.webhookState(snapshot.id), event, JSON.stringify(state))
      .expire(this.keys.webhookState(snapshot.id), retention)
      .exec();
  }
}
