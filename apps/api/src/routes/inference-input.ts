import { z } from '@hono/zod-openapi';
import { type FieldError, MAX_FEATURES, type ModelEntry, QuernError, RowMatrix } from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';

/** Most rows one batch-predict request may carry (one job). */
export const MAX_BATCH_ROWS = 100;
/** Base64 length of the largest tensor: 100 rows of 65 536 float32 values. */
const MAX_TENSOR_BASE64 = Math.ceil((MAX_BATCH_ROWS * MAX_FEATURES * 4) / 3) * 4;

/**
 * Checks every row's width against the model (the JSON schema cannot know the model): a 422
 * naming each bad field, e.g. `requests[3].features`.
 */
export function checkRows(model: ModelEntry, rows: readonly (readonly number[])[], field: (i: number) => string): void {
  const errors: FieldError[] = [];
  rows.forEach((row, i) => {
    if (row.length !== model.input.features) {
      errors.push({
        field: field(i),
        message: `expected ${model.input.features} features for model ${model.name}, got ${row.length}`,
      });
    }
  });
  const first = errors[0];
  if (first) {
    throw new QuernError('validation_failed', `${first.field}: ${first.message}`, { errors: errors.slice(0, 20) });
  }
}

/**
 * How long a sync call waits: `Prefer: wait=N` (seconds, RFC 7240) capped by config, or the
 * default; `Prefer: respond-async` answers 202 at once. With it, the
 * `Preference-Applied` value that says what was honoured: none when the header held no
 * preference this route understands (the default wait is then not a preference of the client's).
 */
export function syncWait(
  prefer: string | undefined,
  defaultMs: number,
  maxMs: number,
): { ms: number; applied: string | undefined } {
  if (!prefer) return { ms: defaultMs, applied: undefined };
  let wait: number | undefined;
  for (const part of prefer.split(/[,;]/)) {
    const token = part.trim().toLowerCase();
    if (token === 'respond-async') return { ms: 0, applied: 'respond-async' };
    const match = /^wait\s*=\s*"?(\d+(?:\.\d+)?)"?$/.exec(token);
    if (match) wait = Number(match[1]) * 1000;
  }
  if (wait === undefined) return { ms: defaultMs, applied: undefined };
  const ms = Math.min(wait, maxMs);
  return { ms, applied: `wait=${Number((ms / 1000).toFixed(3))}` };
}

/** The wait a sync request asks for, capped by config; `Preference-Applied` says what was honoured. */
export function waitPreference(c: Context<AppEnv>): number {
  const { config } = c.get('services');
  const wait = syncWait(c.req.header('prefer'), config.QUERN_SYNC_WAIT_DEFAULT_MS, config.QUERN_SYNC_WAIT_MAX_MS);
  if (wait.applied) c.header('preference-applied', wait.applied);
  return wait.ms;
}

/** `tensor` of a batch-predict request: many rows as packed float32 instead of JSON numbers. */
export const TensorInputSchema = z
  .object({
    dtype: z.literal('float32').openapi({ description: 'The one type accepted: IEEE 754 binary32.' }),
    shape: z
      .array(z.number().int().min(1))
      .length(2)
      .refine((s) => s.length !== 2 || (s[0] as number) <= MAX_BATCH_ROWS, {
        message: `at most ${MAX_BATCH_ROWS} rows`,
        path: [0],
      })
      .openapi({ description: '`[rows, features]`.', example: [2, 6] }),
    data: z
      .string()
      .max(MAX_TENSOR_BASE64)
      .openapi({
        description:
          '`rows × features` little-endian float32 values, row after row, in base64 (RFC 4648, with padding). ' +
          'NaN and infinities are refused.',
      }),
  })
  .openapi('TensorInput');
export type TensorInput = z.infer<typeof TensorInputSchema>;

/** The rows of a `tensor`, checked against the model: a 422 naming `tensor.shape` or `tensor.data`. */
export function tensorRows(model: ModelEntry, tensor: TensorInput): RowMatrix {
  const [count, width] = tensor.shape as [number, number];
  if (width !== model.input.features) {
    const message = `expected ${model.input.features} features for model ${model.name}, got ${width}`;
    throw new QuernError('validation_failed', `tensor.shape[1]: ${message}`, {
      errors: [{ field: 'tensor.shape[1]', message }],
    });
  }
  const matrix = RowMatrix.fromBase64(tensor.data, count, width);
  if (typeof matrix === 'string') {
    throw new QuernError('validation_failed', `tensor.data: ${matrix}`, {
      errors: [{ field: 'tensor.data', message: matrix }],
    });
  }
  return matrix;
}
