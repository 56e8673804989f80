import {
  contextOf,
  createRedis,
  type DeliveryState,
  type KeySpace,
  type Logger,
  type ModelQueues,
  type RedisClient,
  rescheduleDeliveryState,
  SecretBox,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  traceIdOf,
  WebhookDeliveryData,
  WebhookSecrets,
  type WorkerConfig,
  webhookRetryDelay,
  writeDeliveryState,
} from '@quern/shared';
import { DelayedError, type Job, UnrecoverableError, Worker } from 'bullmq';
import { Webhook } from 'standardwebhooks';
import type { WorkerMetrics } from './metrics';
import { type BreakerVerdict, EndpointBreaker, isEndpointFailure } from './webhook-breaker';
import { DeliveryError, postWebhook } from './webhook-http';

export interface WebhookSenderDeps {
  config: WorkerConfig;
  keys: KeySpace;
  redis: RedisClient;
  /** Inference queues by model: a `completed` delivery waits until its job shows as completed. */
  inferenceQueues: ReadonlyMap<string, Pick<ModelQueues, 'getJobState'>>;
  metrics: WorkerMetrics;
  logger: Logger;
  /** Set when tracing is on: each attempt of a traced delivery gets a span in its job's trace. */
  tracer?: Tracer | undefined;
}

/** How long a delivery of a principal at its limit waits before it is tried again (±50%). */
const OWNER_BUSY_DEFER_MS = 1_000;

/** Deliveries in flight in this process, per principal. */
class OwnerSlots {
  private readonly inFlight = new Map<string, number>();
  constructor(private readonly limit: number) {}

  take(owner: string): boolean {
    const n = this.inFlight.get(owner) ?? 0;
    if (n >= this.limit) return false;
    this.inFlight.set(owner, n + 1);
    return true;
  }

  release(owner: string): void {
    const n = (this.inFlight.get(owner) ?? 1) - 1;
    if (n <= 0) this.inFlight.delete(owner);
    else this.inFlight.set(owner, n);
  }
}

/** Why a delivery was put back without an attempt: the label of quern_webhook_deliveries_deferred_total. */
type DeferReason = 'owner_busy' | 'endpoint_open' | 'result_pending';

/** `at` plus up to `spreadMs` of random jitter, so deliveries held back together do not return together. */
const spread = (at: number, spreadMs: number) => Math.round(at + Math.random() * spreadMs);

/**
 * Sends webhook deliveries from their own BullMQ queue. Each is signed per Standard Webhooks
 * (`webhook-id`, `webhook-timestamp`, `webhook-signature`, with both signatures during a secret
 * rotation), POSTed with a QUERN_WEBHOOK_TIMEOUT_MS timeout and no redirects: any 2xx is delivered, 410 stops, anything
 * else is retried on QUERN_WEBHOOK_RETRY_SCHEDULE_MS with ±20% jitter. Each attempt updates the
 * delivery state the job resource shows.
 *
 * One principal's slow receiver must not delay anyone else's deliveries, so two limits hold a
 * delivery back (moved to delayed, not attempted, no attempt spent) instead of letting it take a
 * slot: a principal has at most QUERN_WEBHOOK_PER_OWNER_CONCURRENCY deliveries in flight in this
 * process, and a receiver origin whose circuit is open (EndpointBreaker) gets none until it is
 * probed again.
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

  const slots = new OwnerSlots(Math.min(config.QUERN_WEBHOOK_PER_OWNER_CONCURRENCY, config.QUERN_WEBHOOK_CONCURRENCY));
  const breaker = new EndpointBreaker(redis, keys, {
    failures: config.QUERN_WEBHOOK_BREAKER_FAILURES,
    openMs: config.QUERN_WEBHOOK_BREAKER_OPEN_MS,
    probeMs: config.QUERN_WEBHOOK_TIMEOUT_MS + 5_000,
  });

  /** Puts a delivery back as delayed until `at`: BullMQ does not count it as an attempt. */
  const defer = async (job: Job, token: string | undefined, at: number, reason: DeferReason): Promise<never> => {
    await job.moveToDelayed(at, token);
    metrics.webhookDeferred.labels(reason).inc();
    throw new DelayedError();
  };

  const processor = async (job: Job, token?: string) => {
    const parsed = WebhookDeliveryData.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError('delivery data does not match the contract');
    const data = parsed.data;
    if (!slots.take(data.owner)) {
      return defer(job, token, spread(Date.now() + OWNER_BUSY_DEFER_MS / 2, OWNER_BUSY_DEFER_MS), 'owner_busy');
    }
    try {
      return await deliver(job, token, data);
    } finally {
      slots.release(data.owner);
    }
  };

  const deliver = async (job: Job, token: string | undefined, data: WebhookDeliveryData) => {
    // The inference job is published a moment after its worker enqueued this delivery: wait for
    // that (without spending an attempt), so a receiver that reads the job finds it finished.
    if (data.event === 'completed' && Date.now() - job.timestamp < 30_000) {
      const state = await deps.inferenceQueues.get(data.model)?.getJobState(data.job_id);
      if (state === 'active') await defer(job, token, Date.now() + 100, 'result_pending');
    }
    const origin = EndpointBreaker.originOf(data.url);
    let verdict: BreakerVerdict = { kind: 'closed', failures: 0 };
    if (origin !== undefined) {
      // Without an answer from Redis the breaker stays out of the way: the delivery is tried.
      verdict = await breaker.check(origin).catch((): BreakerVerdict => ({ kind: 'closed', failures: 0 }));
      if (verdict.kind === 'open' || verdict.kind === 'probing') {
        // Open: back when it ends (spread over a second). Probing: soon, as the probe may answer at once.
        const at =
          verdict.kind === 'open'
            ? spread(verdict.until, 1_000)
            : spread(Math.min(verdict.until, Date.now() + OWNER_BUSY_DEFER_MS / 2), OWNER_BUSY_DEFER_MS);
        if (verdict.kind === 'open') {
          await rescheduleDeliveryState(redis, keys, data.job_id, data.event, new Date(at)).catch(() => undefined);
        }
        return defer(job, token, at, 'endpoint_open');
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
    const span =
      data.trace &&
      deps.tracer?.startSpan(
        `webhook ${data.event}`,
        {
          kind: SpanKind.CLIENT,
          attributes: {
            'quern.job_id': data.job_id,
            'quern.webhook_id': data.webhook_id,
            'quern.webhook_event': data.event,
            'quern.attempt': attempt,
            ...(origin ? { 'server.address': origin } : {}),
          },
        },
        contextOf(data.trace),
      );
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
    if (span) {
      if (status > 0) span.setAttribute('http.response.status_code', status);
      if (failure || status < 200 || status >= 300) {
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: failure ? failure.message : `receiver answered ${status}`,
        });
      }
      span.end();
    }
    const log = logger.child({
      request_id: data.request_id,
      job_id: data.job_id,
      event: data.event,
      attempt,
      ...(data.trace ? { trace_id: traceIdOf(data.trace) } : {}),
    });
    if (origin !== undefined && !failure?.permanent) {
      // The breaker's bookkeeping must not turn an outcome into a different one: errors are logged only.
      try {
        if (!isEndpointFailure(status, failure)) await breaker.succeeded(origin, verdict);
        else {
          const opened = await breaker.failed(origin);
          if (opened) {
            metrics.webhookCircuitOpened.inc();
            log.warn(
              { origin, open_until: new Date(opened.openedUntil).toISOString(), probe: verdict.kind === 'probe' },
              'webhook receiver circuit opened',
            );
          }
        }
      } catch (err) {
        log.warn({ origin, err: (err as Error).message }, 'webhook circuit state not updated');
      }
    }

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
  const worker = new Worker(keys.webhookQueue(), processor, {
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
