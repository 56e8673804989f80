import { describe, expect, it } from 'vitest';
import { ConfigSchema } from './config';
import { CONFIG_DOCS, CONFIG_GROUPS, LAUNCHER_VARIABLES } from './config-docs';

const schemaKeys = Object.keys(ConfigSchema.in.shape);

describe('the configuration docs', () => {
  it('describe every variable of the schema', () => {
    const missing = schemaKeys.filter((key) => !(key in CONFIG_DOCS));
    expect(missing, 'describe these in packages/shared/src/config-docs.ts').toEqual([]);
  });

  it('describe no variable the schema lacks', () => {
    const unknown = Object.keys(CONFIG_DOCS).filter((key) => !schemaKeys.includes(key));
    expect(unknown, 'remove these from packages/shared/src/config-docs.ts (or add them to the schema)').toEqual([]);
  });

  it('give every variable a sentence, a group and a reader', () => {
    for (const [key, doc] of Object.entries(CONFIG_DOCS)) {
      expect(doc.description.trim().length, key).toBeGreaterThan(3);
      expect(Object.keys(CONFIG_GROUPS), key).toContain(doc.group);
      expect(['api', 'worker', 'both'], key).toContain(doc.readBy);
    }
  });

  it('keep the launcher’s own variables out of the schema', () => {
    expect(Object.keys(LAUNCHER_VARIABLES).filter((key) => schemaKeys.includes(key))).toEqual([]);
  });
});
