/**
 * `pnpm docs:generate`: writes docs/api.md and docs/configuration.md from the OpenAPI document
 * and the config schema. `docs-fresh.test.ts` fails while the committed pages differ.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { referenceDocs } from './reference-docs';

for (const [path, text] of Object.entries(await referenceDocs())) {
  writeFileSync(join(REPO_ROOT, path), text);
  process.stdout.write(`wrote ${path}\n`);
}
