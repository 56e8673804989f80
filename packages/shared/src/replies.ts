import { z } from 'zod';
import { JobFailure } from './job-failure';
import { InferenceResult } from './jobs';
import type { KeySpace } from './keys';
import type { RedisClient } from './redis';

/**
 * The answer a worker pushes to the API process that waits on a sync job (the job's
 * `reply_to`), published in the same write as the result's cache entries and before BullMQ
 * records the job as finished. It is a shortcut, not the record: BullMQ's job hash stays the
 * truth, and the API's QueueEvents listener and state poll answer a caller whose reply was lost.
 * This module is the one owner of the format: the worker encodes, the API decodes.
 */
export const JobReply = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('completed'), job_id: z.string(), result: InferenceResult }),
  z.object({ kind: z.literal('failed'), job_id: z.string(), failure: JobFailure }),
]);
export type JobReply = z.infer<typeof JobReply>;

export function encodeReply(reply: JobReply): string {
  return JSON.stringify(reply);
}

/** A reply read from the channel; undefined for anything that is not one (it is then ignored). */
export function decodeReply(raw: string): JobReply | undefined {
  try {
    const parsed = JobReply.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Listens on one API process's reply channel. The subscription needs a connection of its own
 * (a subscribed Redis connection takes no other commands); ioredis subscribes again after a
 * reconnect by itself. Replies published while it was down are lost: the fallbacks answer.
 */
export async function listenForReplies(
  subscriber: RedisClient,
  keys: KeySpace,
  instance: string,
  onReply: (reply: JobReply) => void,
): Promise<void> {
  const channel = keys.replyChannel(instance);
  subscriber.on('message', (from: string, message: string) => {
    if (from !== channel) return;
    const reply = decodeReply(message);
    if (reply) onReply(reply);
  });
  await subscriber.subscribe(channel);
}
