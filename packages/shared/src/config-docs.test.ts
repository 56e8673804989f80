import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, configSchema } from './config';
import { CONFIG_DOCS, CONFIG_GROUPS, LAUNCHER_VARIABLES } from './config-docs';

const schemaKeys = Object.keys(configSchema('all').in.shape);

describe('the configuration docs', () => {
  it('describe every variable of the schema', () => {
    const missing = schemaKeys.filter((key) => !(key in CONFIG_DOCS));
    expect(missing, 'describe these in packages/shared/src/config-docs.ts').toEqual([]);
  });

  it('describe no variable the schema lacks', () => {
    const unknown = Object.keys(CONFIG_DOCS).filter((key) => !schemaKeys.includes(key));
    expect(unknown, 'remove these from packages/shared/src/config-docs.ts (or add them to the schema)').toEqual([]);
  });

  it('give every variable a sentence and a group', () => {
    for (const [key, doc] of Object.entries(CONFIG_DOCS)) {
      expect(doc.description.trim().length, key).toBeGreaterThan(3);
      expect(Object.keys(CONFIG_GROUPS), key).toContain(doc.group);
    }
  });

  it('put every variable in the schema of at least one process', () => {
    const read = new Set([...CONFIG_VARIABLES.api, ...CONFIG_VARIABLES.worker, ...CONFIG_VARIABLES.cli]);
    expect(schemaKeys.filter((key) => !read.has(key))).toEqual([]);
    // Token signing is the API's alone; inference threads are the worker's alone.
    expect(CONFIG_VARIABLES.worker).not.toContain('QUERN_JWT_KEYS');
    expect(CONFIG_VARIABLES.api).not.toContain('QUERN_WORKER_THREADS');
  });

  it('keep the launcher’s own variables out of the schema', () => {
    expect(Object.keys(LAUNCHER_VARIABLES).filter((key) => schemaKeys.includes(key))).toEqual([]);
  });
});
