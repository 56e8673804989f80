import { z } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/**
 * The run deadline a request asks for with `Cancel-After` (Replicate's header): a duration such as
 * `30s`, `5m`, `1h30m` or `250ms`, or a number of seconds. Undefined without the header; a value
 * that is not a duration, is zero, or exceeds QUERN_JOB_TIMEOUT_MAX_MS is a 422 naming the header.
 */
export function cancelAfterMs(c: Context<AppEnv>): number | undefined {
  const raw = c.req.header('cancel-after');
  if (raw === undefined) return undefined;
  const value = raw.trim();
  let ms = 0;
  if (/^\d+(\.\d+)?$/.test(value)) ms = Number(value) * 1_000;
  else {
    const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)];
    if (parts.length === 0 || parts.map((p) => p[0]).join('') !== value) ms = Number.NaN;
    for (const [, n, unit] of parts) ms += Number(n) * (UNIT_MS[unit as string] as number);
  }
  const max = c.get('services').config.QUERN_JOB_TIMEOUT_MAX_MS;
  if (!Number.isFinite(ms) || ms < 1 || ms > max) {
    const reason = `must be a duration such as 30s, 5m or 1h30m, from 1 ms to ${max} ms`;
    throw new QuernError('validation_failed', `Cancel-After: ${reason}`, {
      errors: [{ field: 'cancel-after', message: reason }],
    });
  }
  return Math.round(ms);
}

/** The `Cancel-After` request header as the routes that take it document it. */
export const CancelAfterHeader = z
  .string()
  .max(32)
  .optional()
  .openapi({
    example: '30s',
    description:
      'Run deadline (as Replicate’s header): the job must have finished this long after it is created. ' +
      'Still queued or waiting for its batch then, it ends `expired`; its batch running then, it finishes ' +
      'but ends `expired` without output. `timeout_ms` bounds only the queueing.',
  });
