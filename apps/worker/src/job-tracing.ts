import {
  contextOf,
  type InferenceJobData,
  linkTo,
  type Span,
  type SpanContext,
  SpanKind,
  TraceFlags,
  type Tracer,
  withSpan,
} from '@quern/shared';

/** One batch as the scheduler ran it, with the span of each job that had rows in it. */
export interface TracedBatch {
  model: string;
  version: string;
  rows: number;
  /** Epoch ms when the batch was handed to a thread, and when its answer came back. */
  startedAt: number;
  finishedAt: number;
  jobs: SpanContext[];
}

/**
 * The worker's spans, made only when tracing is on and a job carries a trace context: the job's
 * span (parented in the request's trace, from the enqueue to the published result), the time it
 * sat in the queue, the reply, and one span per batch linked to every job in it.
 */
export class JobTracer {
  constructor(private readonly tracer: Tracer) {}

  /** The job's span, from its enqueue (`created_at`) on, with a `queued` child up to now. */
  startJob(
    data: InferenceJobData & { trace: NonNullable<InferenceJobData['trace']> },
    jobId: string,
    attempt: number,
  ): Span {
    const now = Date.now();
    const span = this.tracer.startSpan(
      `job ${data.model}`,
      {
        kind: SpanKind.CONSUMER,
        startTime: data.created_at,
        attributes: {
          'quern.job_id': jobId,
          'quern.request_id': data.request_id,
          'quern.model': data.model,
          'quern.model_version': data.model_version,
          'quern.mode': data.mode,
          'quern.attempt': attempt,
        },
      },
      contextOf(data.trace),
    );
    // A trace the sampler left out costs no more spans.
    if (span.isRecording()) this.tracer.startSpan('queued', { startTime: data.created_at }, withSpan(span)).end(now);
    return span;
  }

  /** The reply: cache entries, the waiting API's answer and the webhook enqueue, in one span. */
  startReply(job: Span): Span {
    return this.tracer.startSpan('reply', {}, withSpan(job));
  }

  /**
   * One span per ONNX Runtime call, in a trace of its own, linked to the span of every sampled
   * job it served (a batch of jobs whose traces were all left out makes none).
   */
  batch(batch: TracedBatch): void {
    const sampled = batch.jobs.filter((job) => (job.traceFlags & TraceFlags.SAMPLED) !== 0);
    if (sampled.length === 0) return;
    const span = this.tracer.startSpan(`inference ${batch.model}`, {
      root: true,
      startTime: batch.startedAt,
      links: sampled.map((job) => linkTo(job)),
      attributes: {
        'quern.model': batch.model,
        'quern.model_version': batch.version,
        'quern.batch_size': batch.rows,
        'quern.batch_jobs': batch.jobs.length,
        'quern.batch_jobs_sampled': sampled.length,
      },
    });
    span.end(batch.finishedAt);
  }
}
