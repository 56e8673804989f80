import {
  type Config,
  createRedis,
  type DeliveryState,
  type KeySpace,
  type Logger,
  type RedisClient,
  SecretBox,
  WEBHOOK_QUEUE,
  WebhookDeliveryData,
  WebhookSecrets,
  webhookRetryDelay,
  writeDeliveryState,
} from '@quern/shared';
import { DelayedError, type Job, type Queue, UnrecoverableError, Worker } from 'bullmq';
import { Webhook } from 'standardwebhooks';
import type { WorkerMetrics } from './metrics';
import { DeliveryError, postWebhook } from './webhook-http';

export interface WebhookSenderDeps {
  config: Config;
  keys: KeySpace;
  redis: RedisClient;
  /** Inference queues by model: a `completed` delivery waits until its job shows as completed. */
  inferenceQueues: ReadonlyMap<string, Queue>;
  metrics: WorkerMetrics;
  logger: Logger;
}

/**
 * Sends webhook deliveries from their own BullMQ queue. Each is signed per Standard Webhooks
 * (`webhook-id`, `webhook-timestamp`, `webhook-signature`, with both signatures during a secret
 * rotation), POSTed with a 10 s timeout and no redirects: any 2xx is delivered, 410 stops, anything
 * else is retried on QUERN_WEBHOOK_RETRY_SCHEDULE_MS with ±20% jitter. Each attempt updates the
 * delivery state the job resource shows.
 */
export function createWebhookSender(deps: WebhookSenderDeps): { worker: Worker; connection: RedisClient } {
  const { config, keys, redis, metrics, logger } = deps;
  const secrets = new WebhookSecrets(
    redis,
    keys,
    new SecretBox(config.QUERN_SECRETS_KEY),
    config.QUERN_WEBHOOK_ROTATION_OVERLAP_SECONDS,
  );
  const schedule = config.QUERN_WEBHOOK_RETRY_SCHEDULE_MS;
  const policy = { allowHttp: config.NODE_ENV !== 'production', allowHosts: config.QUERN_WEBHOOK_ALLOW_HOSTS };
  const retention = config.QUERN_RETAIN_FAILED_SECONDS;

  const record = (data: WebhookDeliveryData, state: Omit<DeliveryState, 'event' | 'updated_at'>) =>
    writeDeliveryState(
      redis,
      keys,
      data.job_id,
      { ...state, event: data.event, updated_at: new Date().toISOString() },
      retention,
    );

  const processor = async (job: Job, token?: string) => {
    const parsed = WebhookDeliveryData.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError('delivery data does not match the contract');
    const data = parsed.data;
    // The inference job is published a moment after its worker enqueued this delivery: wait for
    // that (without spending an attempt), so a receiver that reads the job finds it finished.
    if (data.event === 'completed' && Date.now() - job.timestamp < 30_000) {
      const state = await deps.inferenceQueues.get(data.model)?.getJobState(data.job_id);
      if (state === 'active') {
        await job.moveToDelayed(Date.now() + 100, token);
        throw new DelayedError();
      }
    }
    const attempt = job.attemptsMade + 1;
    const attempts = job.opts.attempts ?? 1;
    const signingSecrets = await secrets.signingSecrets(data.owner);
    const timestamp = new Date();
    const signature = signingSecrets
      .map((secret) => new Webhook(secret).sign(data.webhook_id, timestamp, data.payload))
      .join(' ');
    const started = performance.now();
    let status = 0;
    let failure: DeliveryError | undefined;
    try {
      ({ status } = await postWebhook(
        data.url,
        data.payload,
        {
          'webhook-id': data.webhook_id,
          'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
          'webhook-signature': signature,
        },
        { timeoutMs: config.QUERN_WEBHOOK_TIMEOUT_MS, policy },
      ));
    } catch (err) {
      failure = err instanceof DeliveryError ? err : new DeliveryError((err as Error).message, false);
    }
    metrics.webhookDuration.observe((performance.now() - started) / 1000);
    const log = logger.child({ request_id: data.request_id, job_id: data.job_id, event: data.event, attempt });

    if (!failure && status >= 200 && status < 300) {
      metrics.webhookDeliveries.labels('delivered').inc();
      await record(data, { status: 'delivered', attempts: attempt, last_status_code: status, next_attempt_at: null });
      log.info({ status }, 'webhook delivered');
      return { status };
    }
    const lastStatus = failure ? null : status;
    if (status === 410 || failure?.permanent) {
      metrics.webhookDeliveries.labels(status === 410 ? 'gone' : 'refused').inc();
      await record(data, {
        status: status === 410 ? 'gone' : 'failed',
        attempts: attempt,
        last_status_code: lastStatus,
        next_attempt_at: null,
      });
      log.warn({ status, reason: failure?.message }, 'webhook not retried');
      throw new UnrecoverableError(failure ? failure.message : 'receiver answered 410 Gone');
    }
    const final = attempt >= attempts;
    const next = final ? null : new Date(Date.now() + webhookRetryDelay(schedule, job.id as string, attempt));
    metrics.webhookDeliveries.labels(final ? 'failed' : 'retried').inc();
    await record(data, {
      status: final ? 'failed' : 'retrying',
      attempts: attempt,
      last_status_code: lastStatus,
      next_attempt_at: next?.toISOString() ?? null,
    });
    log.warn({ status: lastStatus, reason: failure?.message, next_attempt_at: next }, 'webhook attempt failed');
    throw new Error(failure ? failure.message : `receiver answered ${status}`);
  };

  const connection = createRedis(config, 'consumer', { name: 'worker-webhooks', logger });
  const worker = new Worker(WEBHOOK_QUEUE, processor, {
    connection,
    prefix: config.QUERN_REDIS_PREFIX,
    concurrency: config.QUERN_WEBHOOK_CONCURRENCY,
    settings: {
      backoffStrategy: (attemptsMade: number, _type?: string, _err?: Error, job?: { id?: string }) =>
        webhookRetryDelay(schedule, job?.id ?? '', attemptsMade),
    },
  });
  worker.on('error', (err) => logger.warn({ err: err.message }, 'webhook consumer error'));
  return { worker, connection };
}
