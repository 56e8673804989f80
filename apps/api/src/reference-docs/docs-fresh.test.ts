import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { describe, expect, it } from 'vitest';
import { referenceDocs } from './reference-docs';

describe('the generated reference docs', () => {
  it('are committed as generated (otherwise: run pnpm docs:generate)', async () => {
    const pages = await referenceDocs();
    expect(Object.keys(pages).sort()).toEqual(['docs/api.md', 'docs/configuration.md']);
    for (const [path, generated] of Object.entries(pages)) {
      const committed = readFileSync(join(REPO_ROOT, path), 'utf8');
      expect(committed, `${path} is stale: run pnpm docs:generate`).toBe(generated);
    }
  });
});
