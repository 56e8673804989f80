import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { describe, expect, it } from 'vitest';
import { generatedSchema, SCHEMA_PATH } from './served-schema';

describe('the generated client types', () => {
  it('are those of the document the app serves (otherwise: run pnpm client:generate)', async () => {
    const committed = readFileSync(join(REPO_ROOT, SCHEMA_PATH), 'utf8');
    const generated = await generatedSchema();
    // Line by line first, so a failure names the first difference rather than two 100 kB strings.
    const a = committed.split('\n');
    const b = generated.split('\n');
    const first = b.findIndex((line, i) => line !== a[i]);
    expect(
      first === -1 ? null : { line: first + 1, committed: a[first], served: b[first] },
      `${SCHEMA_PATH} is stale`,
    ).toBe(null);
    expect(committed).toBe(generated);
  });
});
