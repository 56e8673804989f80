import { type FieldError, type ModelEntry, QuernError } from '@quern/shared';

/** Most rows one batch-predict request may carry (one job). */
export const MAX_BATCH_ROWS = 100;

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
 * default; `Prefer: respond-async` answers 202 at once.
 */
export function syncWaitMs(prefer: string | undefined, defaultMs: number, maxMs: number): number {
  if (!prefer) return defaultMs;
  let wait: number | undefined;
  for (const part of prefer.split(/[,;]/)) {
    const token = part.trim().toLowerCase();
    if (token === 'respond-async') return 0;
    const match = /^wait\s*=\s*"?(\d+(?:\.\d+)?)"?$/.exec(token);
    if (match) wait = Number(match[1]) * 1000;
  }
  return wait === undefined ? defaultMs : Math.min(wait, maxMs);
}
