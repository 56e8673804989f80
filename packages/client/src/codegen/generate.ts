/**
 * `pnpm client:generate`: writes packages/client/src/schema.ts, the types of the OpenAPI document
 * the API serves. `schema-fresh.test.ts` fails while the committed file differs.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { generatedSchema, SCHEMA_PATH } from './served-schema';

writeFileSync(join(REPO_ROOT, SCHEMA_PATH), await generatedSchema());
process.stdout.write(`wrote ${SCHEMA_PATH}\n`);
