import { CONFIG_VARIABLES, configSchema } from '@quern/shared';
import {
  CONFIG_DOCS,
  CONFIG_GROUPS,
  type ConfigGroup,
  LAUNCHER_VARIABLES,
  type VariableDoc,
} from '@quern/shared/src/config-docs';
import { z } from 'zod';
import { anchor, code, item, page, wrap } from './markdown';

/** A duration, size or count as a person reads it: `86400` seconds is 24 h. */
function human(name: string, value: number): string | undefined {
  if (name.endsWith('_BYTES')) {
    if (value >= 1 << 20 && value % (1 << 20) === 0) return `${value / (1 << 20)} MiB`;
    if (value >= 1 << 10 && value % (1 << 10) === 0) return `${value / (1 << 10)} KiB`;
    return undefined;
  }
  const ms = name.endsWith('_MS') ? value : name.endsWith('_SECONDS') ? value * 1000 : undefined;
  // `5` seconds needs no translation; `5000` ms and `900` seconds do.
  if (ms === undefined || ms < (name.endsWith('_MS') ? 1000 : 60_000)) return undefined;
  const day = 86_400_000;
  if (ms >= 2 * day && ms % day === 0) return `${ms / day} days`;
  const units: [number, string][] = [
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1000, 's'],
  ];
  for (const [size, unit] of units) {
    if (ms % size === 0) return `${ms / size} ${unit}`;
  }
  return undefined;
}

/** The default the schema gives when the variable is unset, as the page shows it. */
function defaultText(name: string, schema: z.ZodType, doc: VariableDoc): string {
  if (doc.defaultText) return doc.defaultText;
  const parsed = schema.safeParse(undefined);
  if (!parsed.success) throw new Error(`${name}: no default and not optional`);
  const value: unknown = parsed.data;
  let text: string;
  if (value === undefined) text = 'unset';
  else if (Array.isArray(value) && value.length === 0) text = 'empty';
  else if (Array.isArray(value)) {
    text = code(value.join(','));
    const readable = value.map((v) => (typeof v === 'number' ? human(name, v) : undefined));
    if (readable.every((r) => r !== undefined)) text += ` (${readable.join(', ')})`;
  } else if (typeof value === 'number') {
    const readable = human(name, value);
    text = readable ? `${code(value)} (${readable})` : code(value);
  } else {
    text = code(String(value));
  }
  return doc.defaultNote ? `${text} ${doc.defaultNote}` : text;
}

/** The checks of a zod schema, as plain objects (`{check: 'max_length', maximum: 50}`, …). */
function checksOf(schema: z.ZodType): Record<string, unknown>[] {
  return (schema.def.checks ?? []).map((check) => ({ ...check._zod.def }));
}

function numberRange(schema: z.ZodNumber): string {
  const kind = schema.format === 'safeint' ? 'integer' : 'number';
  return `${kind}, ${schema.minValue} to ${schema.maxValue}`;
}

/** Whether `schema` reads a comma-separated list: text turned into an array. */
function isList(schema: z.ZodType): boolean {
  if (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) return isList(schema.unwrap() as z.ZodType);
  if (!(schema instanceof z.ZodPipe)) return false;
  const source = schema.in as z.ZodType;
  return source instanceof z.ZodString ? schema.out instanceof z.ZodTransform : isList(source);
}

/** What values the schema accepts, where it knows: a range, a set, a pattern, a list. */
function allowed(schema: z.ZodType): string {
  if (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) return allowed(schema.unwrap() as z.ZodType);
  if (isList(schema) && schema instanceof z.ZodPipe) {
    const out = schema.out as z.ZodType;
    if (out instanceof z.ZodArray) {
      const max = checksOf(out).find((c) => c.check === 'max_length')?.maximum;
      const element = out.element as z.ZodType;
      const each = element instanceof z.ZodNumber ? numberRange(element).replace(/^(\w+),/, '$1s,') : 'values';
      return `comma-separated list of ${max === undefined ? '' : `at most ${max} `}${each}`;
    }
    return 'comma-separated list';
  }
  if (schema instanceof z.ZodPipe) return allowed(schema.in as z.ZodType);
  if (schema instanceof z.ZodNumber) return numberRange(schema);
  if (schema instanceof z.ZodEnum) return `one of ${schema.options.map((o) => code(String(o))).join(', ')}`;
  if (schema instanceof z.ZodURL) return 'URL';
  if (schema instanceof z.ZodString) {
    const pattern = checksOf(schema).find((c) => c.pattern instanceof RegExp)?.pattern;
    if (pattern instanceof RegExp) return `text matching ${code(pattern.source)}`;
    if (schema.minLength !== null && schema.minLength > 1) return `text of at least ${schema.minLength} characters`;
    return 'text';
  }
  throw new Error(`no description of a ${schema.def.type} schema: teach configuration-page.ts`);
}

/** Who reads a variable, from the per-process schemas (`CONFIG_VARIABLES`). */
function readers(name: string): string {
  const api = CONFIG_VARIABLES.api.includes(name);
  const worker = CONFIG_VARIABLES.worker.includes(name);
  const cli = CONFIG_VARIABLES.cli.includes(name);
  if (cli) return 'every process (API, worker, key CLI)';
  if (api && worker) return 'the API and the worker';
  return api ? 'the API' : 'the worker';
}

/** docs/configuration.md: every variable of the per-process schemas, by group. */
export function configurationPage(): string {
  const shape: Record<string, z.ZodType> = configSchema('all').in.shape;
  const byGroup = new Map<ConfigGroup, string[]>();
  for (const [name, doc] of Object.entries(CONFIG_DOCS)) {
    const schema = shape[name];
    if (!schema) throw new Error(`${name} is described in config-docs.ts but no process reads it`);
    const facts = [`default ${defaultText(name, schema, doc)}`, allowed(schema), `read by ${readers(name)}`];
    const entry = `${item(`**${code(name)}**: ${facts.join('; ')}.`)}\n${wrap(doc.description, '  ')}`;
    byGroup.set(doc.group, [...(byGroup.get(doc.group) ?? []), entry]);
  }
  const missing = Object.keys(shape).filter((name) => !(name in CONFIG_DOCS));
  if (missing.length > 0) throw new Error(`describe ${missing.join(', ')} in packages/shared/src/config-docs.ts`);

  const groups = Object.entries(CONFIG_GROUPS) as [ConfigGroup, { title: string; intro: string }][];
  const blocks = [
    '# Configuration',
    '<!-- Generated by `pnpm docs:generate` from the schemas in packages/shared/src/config.ts and the descriptions\n' +
      '     in packages/shared/src/config-docs.ts. Edit those, then regenerate; a test fails while this page is stale. -->',
    wrap(
      'Each process reads the environment at start-up with a zod schema of its own (`packages/shared/src/config.ts`), ' +
        'built from shared pieces: Redis and the settings API and worker must agree on are one definition, so ' +
        'their defaults and ranges agree everywhere, while the API alone parses HTTP, authentication and rate ' +
        'limits and the worker alone its threads, locks and webhook delivery. A worker is never handed ' +
        'token-signing keys. A bad value stops the process with a message naming the variable (values of secrets ' +
        'are never echoed); a variable of another process is ignored. An empty value counts as unset, so `FOO=` ' +
        'in a compose file falls back to the default. "Read by" is taken from the schemas. Lists are ' +
        'comma-separated.',
    ),
    wrap(groups.map(([, g]) => `[${g.title}](#${anchor(g.title)})`).join(' · ')),
  ];
  for (const [id, group] of groups) {
    const entries = byGroup.get(id) ?? [];
    if (entries.length === 0) continue;
    blocks.push(`## ${group.title}`, wrap(group.intro), entries.join('\n'));
  }
  blocks.push(
    '## Read by `pnpm start` alone',
    wrap('The local launcher (`packages/devkit/src/start.ts`) reads these before it starts the processes.'),
    Object.entries(LAUNCHER_VARIABLES)
      .map(([name, v]) => `${item(`**${code(name)}**: default ${v.default}.`)}\n${wrap(v.description, '  ')}`)
      .join('\n'),
  );
  return page(blocks);
}
