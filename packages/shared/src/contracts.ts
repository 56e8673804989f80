import { z } from 'zod';
import { InferenceJobData } from './jobs';
import type { KeySpace } from './keys';
import type { RedisClient } from './redis';

/*
 * The small formats the API and the workers exchange through Redis besides the queues' own
 * (job data and results: jobs.ts; failures: job-failure.ts; replies: replies.ts; webhook
 * deliveries: webhooks.ts). Each is written and read only through the functions here.
 */

// ---------------------------------------------------------------- result cache

/**
 * A cached output row: the JSON array of the row's output values. Keys (`KeySpace.cache`) hold
 * model name, version and the SHA-256 of the float32 input row, so another version never
 * answers from this one's entries.
 */
export function encodeCachedRow(values: readonly number[]): string {
  return JSON.stringify(values);
}

/** A cached row read back; a corrupt or wrong-sized entry is a miss (the next result overwrites it). */
export function decodeCachedRow(raw: string | null, size: number): number[] | null {
  if (raw === null) return null;
  try {
    const value: unknown = JSON.parse(raw);
    if (Array.isArray(value) && value.length === size && value.every((v) => typeof v === 'number')) {
      return value as number[];
    }
  } catch {
    // a miss
  }
  return null;
}

// ---------------------------------------------------------------- cancel signal

/**
 * How long a cancel request is kept in Redis and remembered by a worker that heard it: a job
 * fetched later within this time is dropped too. Both sides use this one number.
 */
export const CANCEL_REMEMBER_SECONDS = 3600;

/**
 * Asks the workers to drop a job they hold: a record a worker that fetches the job later finds,
 * and a message for the workers listening now (`KeySpace.cancelChannel`, the job id as payload).
 */
export async function requestCancel(redis: RedisClient, keys: KeySpace, jobId: string): Promise<void> {
  await redis
    .multi()
    .set(keys.cancelRequest(jobId), String(Date.now()), 'EX', CANCEL_REMEMBER_SECONDS)
    .publish(keys.cancelChannel(), jobId)
    .exec();
}

// ---------------------------------------------------------------- canceled record

/** What is kept of a job removed from its queue by its owner (BullMQ no longer has it). */
export const CanceledRecord = z.object({
  id: z.string(),
  data: InferenceJobData,
  timestamp: z.number(),
  canceled_at: z.number(),
});
export type CanceledRecord = z.infer<typeof CanceledRecord>;

export async function writeCanceledRecord(
  redis: RedisClient,
  keys: KeySpace,
  record: CanceledRecord,
  ttlSeconds: number,
): Promise<void> {
  await redis.set(keys.canceledJob(record.id), JSON.stringify(record), 'EX', ttlSeconds);
}

/** The record, validated; a record that does not parse is treated as absent. */
export function decodeCanceledRecord(raw: string | null): CanceledRecord | undefined {
  if (raw === null) return undefined;
  try {
    const parsed = CanceledRecord.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
