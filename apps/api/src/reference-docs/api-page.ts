import { type ErrorCode, ErrorCodes } from '@quern/shared';
import type { Scope } from '../services/principal';
import { anchor, code, item, page, wrap } from './markdown';

/** The parts of a JSON Schema (OpenAPI 3.1) the page shows. */
export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  format?: string;
  description?: string;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  default?: unknown;
}

interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  description?: string;
  schema?: JsonSchema;
}

interface MediaTypes {
  content?: Record<string, { schema?: JsonSchema }>;
}

export interface Operation {
  operationId?: string;
  summary?: string;
  description?: string;
  deprecated?: boolean;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: MediaTypes & { required?: boolean };
  responses: Record<string, MediaTypes & { description?: string; headers?: Record<string, unknown> }>;
}

/** The parts of the OpenAPI document the page shows. */
export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; description?: string };
  tags?: { name: string; description?: string }[];
  paths: Record<string, Record<string, Operation>>;
  components?: {
    schemas?: Record<string, JsonSchema>;
    securitySchemes?: Record<string, { type: string; name?: string; scheme?: string; description?: string }>;
  };
}

/** What the app enforces that the document does not say, and what it serves outside the document. */
export interface ApiFacts {
  /** The scope each protected operation asks for, by `METHOD /path/{param}` (null: any valid credential). */
  scopes: Map<string, Scope | null>;
  /** The problem title of each error code. */
  titles: Record<ErrorCode, string>;
  /** Routes the app serves that the document leaves out (its own page, Bull Board), with their scope if any. */
  extraRoutes: { route: string; description: string; scope: Scope | null | undefined }[];
}

/** When each error code is answered: the explanations of docs/api.md's error table. */
export const ERROR_EXPLANATIONS: Record<ErrorCode, string> = {
  malformed_request: 'The body is not valid JSON.',
  unauthorized: 'No credential, or an unknown, revoked or expired one (with `WWW-Authenticate`).',
  forbidden:
    'The credential lacks the route’s scope; `POST /v1/auth/token` called with a token, or asking for scopes its ' +
    'key lacks.',
  not_found: 'An unknown route, or an unknown key id on the admin routes.',
  method_not_allowed: 'A method the path does not serve; `Allow` lists the ones it does (RFC 9110).',
  job_not_found: 'An unknown job, or another principal’s job: it answers 404 exactly like a job that does not exist.',
  model_not_found: 'An unknown model.',
  job_finished: 'Cancel of a job that has ended.',
  job_already_started: 'Cancel of a job whose batch has started (the job completes).',
  job_canceled: 'A sync call whose job was canceled.',
  job_not_retryable: 'A retry of a job that is not `failed`, `expired` or `canceled`, or that a worker still holds.',
  job_expired:
    'A sync call whose job was still queued at its deadline (`timeout_ms`): answered at the deadline, not at the ' +
    'end of the wait.',
  payload_too_large: 'Body over `QUERN_BODY_LIMIT_BYTES` (with or without `Content-Length`).',
  unsupported_media_type: 'Body not sent as `application/json`.',
  validation_failed:
    'Wrong feature count, a non-finite or out-of-float32-range number, too many rows, a bad `tensor`, an input the ' +
    'model’s output overflows on (a client batch fails naming the row; of sync calls sharing a job, only that ' +
    'caller gets `422`); `errors` names each field (`features[2]`, `requests[3].features`, `tensor.data`).',
  idempotency_key_reused: 'An `Idempotency-Key` reused with another body.',
  rate_limited: 'A rate limit, or too many failed authentications from the address (with `Retry-After`).',
  concurrency_limited:
    'The key already has its cap of rows queued or running (`QUERN_CONCURRENCY_FREE_ROWS`, ' +
    '`QUERN_CONCURRENCY_PREMIUM_ROWS`; with `Retry-After`).',
  internal_error: 'An internal error (the detail never contains internal text; quote the request id).',
  inference_failed: 'The job failed; `GET /v1/jobs/{id}` shows why.',
  redis_unavailable: 'Redis is unreachable (with `Retry-After`).',
  queue_full: 'The model’s queue is at `QUERN_QUEUE_MAX_DEPTH` (with `Retry-After` from the recent drain rate).',
  service_unavailable: 'An `Idempotency-Key` replay whose original job is still being created (with `Retry-After`).',
};

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

const refName = (ref: string): string => ref.slice(ref.lastIndexOf('/') + 1);
const schemaLink = (name: string): string => `[${name}](#${anchor(name)})`;

/** A schema's type in a few words: `string`, `integer`, `number[]`, `[Job](#job)`, `string or null`. */
function typeText(schema: JsonSchema): string {
  if (schema.$ref) return schemaLink(refName(schema.$ref));
  if (schema.enum) {
    const values = schema.enum.map((v) => code(typeof v === 'string' ? v : JSON.stringify(v)));
    return values.length > 2 ? `one of ${values.join(', ')}` : values.join(' or ');
  }
  const union = schema.anyOf ?? schema.oneOf;
  if (union) return union.map(typeText).join(' or ');
  const types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
  if (types.length === 0) return 'any';
  return types
    .map((type) => {
      if (type === 'array') {
        const items = schema.items ? typeText(schema.items) : 'any';
        return /^\w+$/.test(items) ? `${items}[]` : `array of ${items}`;
      }
      if (type === 'object' && schema.properties) return `object (${Object.keys(schema.properties).join(', ')})`;
      return schema.format && type === 'string' ? `string (${schema.format})` : type;
    })
    .join(' or ');
}

/** The limits a schema states: `1 to 100`, `at most 255 characters`, `default 5`. */
function limits(schema: JsonSchema): string[] {
  const out: string[] = [];
  const range = (min: number | undefined, max: number | undefined, unit: string) => {
    if (min !== undefined && max !== undefined) out.push(`${min} to ${max}${unit}`);
    else if (min !== undefined) out.push(`at least ${min}${unit}`);
    else if (max !== undefined) out.push(`at most ${max}${unit}`);
  };
  range(schema.minimum, schema.maximum, '');
  range(schema.minLength, schema.maxLength, ' characters');
  range(schema.minItems, schema.maxItems, schema.minItems === 1 && schema.maxItems === undefined ? ' item' : ' items');
  if (schema.default !== undefined) out.push(`default ${code(JSON.stringify(schema.default))}`);
  return out;
}

/**
 * One list item per field of an object schema, nested fields by their path (`requests[].features`,
 * `input.name`); fields that refer to a named schema link to it instead of repeating it.
 */
function fields(schema: JsonSchema, prefix = ''): string[] {
  const out: string[] = [];
  for (const part of schema.allOf ?? []) {
    if (part.$ref) out.push(item(`Every field of ${schemaLink(refName(part.$ref))}.`));
    else out.push(...fields(part, prefix));
  }
  const required = new Set(schema.required ?? []);
  for (const [name, field] of Object.entries(schema.properties ?? {})) {
    const path = `${prefix}${name}`;
    const nested = field.properties ? field : field.type === 'array' && field.items?.properties ? field.items : null;
    const nullable = Array.isArray(field.type) && field.type.includes('null') ? ' or null' : '';
    const facts = [nested && nested !== field ? 'object[]' : nested ? `object${nullable}` : typeText(field)];
    facts.push(required.has(name) ? 'required' : 'optional', ...limits(field));
    if (field.type === 'array' && field.items) facts.push(...limits(field.items).map((l) => `each ${l}`));
    const description = field.description ? `: ${field.description}` : '';
    out.push(item(`${code(path)} (${facts.join(', ')})${description}`));
    if (nested) out.push(...fields(nested, nested === field ? `${path}.` : `${path}[].`));
  }
  return out;
}

/** The named schemas a schema refers to, itself included when it is a reference. */
function refsIn(schema: unknown, into: Set<string>): Set<string> {
  if (Array.isArray(schema)) for (const s of schema) refsIn(s, into);
  else if (schema && typeof schema === 'object') {
    for (const [key, value] of Object.entries(schema)) {
      if (key === '$ref' && typeof value === 'string') into.add(refName(value));
      else refsIn(value, into);
    }
  }
  return into;
}

function securityText(doc: OpenApiDocument, op: Operation, scope: Scope | null | undefined): string {
  const schemes = (op.security ?? []).flatMap((requirement) => Object.keys(requirement));
  if (schemes.length === 0) return 'Public: no credential.';
  const how = schemes
    .map((name) => {
      const scheme = doc.components?.securitySchemes?.[name];
      if (scheme?.type === 'apiKey' && scheme.name) return code(`${scheme.name}: <key>`);
      if (scheme?.type === 'http' && scheme.scheme === 'bearer') return code('Authorization: Bearer <key or token>');
      return code(name);
    })
    .join(' or ');
  if (scope === undefined) throw new Error('a protected operation whose scope the app does not say');
  return `${scope === null ? 'Any valid credential' : `Scope ${code(scope)}`}: ${how}.`;
}

function operationSection(
  doc: OpenApiDocument,
  method: string,
  path: string,
  op: Operation,
  facts: ApiFacts,
  same: string | undefined,
): string[] {
  const title = `${method.toUpperCase()} ${path}`;
  const blocks = [`### ${title}`];
  const lead = [`**${op.summary ?? title}.**`];
  if (op.deprecated) lead.push('Deprecated.');
  lead.push(securityText(doc, op, facts.scopes.get(title)));
  if (op.operationId) lead.push(`Operation id ${code(op.operationId)}.`);
  blocks.push(wrap(lead.join(' ')));
  if (same) {
    blocks.push(wrap(`Description, parameters, request body and responses as ${same}.`));
    return blocks;
  }
  if (op.description) blocks.push(wrap(op.description));
  const parameters = op.parameters ?? [];
  if (parameters.length > 0) {
    blocks.push(
      'Parameters:',
      parameters
        .map((p) => {
          const schema = p.schema ?? {};
          const facts = [p.in, typeText(schema), p.required ? 'required' : 'optional', ...limits(schema)];
          const description = p.description ?? schema.description;
          return item(`${code(p.name)} (${facts.join(', ')})${description ? `: ${description}` : ''}`);
        })
        .join('\n'),
    );
  }
  for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) {
    const schema = media.schema ?? {};
    const named = schema.$ref ? refName(schema.$ref) : undefined;
    const resolved = named ? (doc.components?.schemas?.[named] ?? {}) : schema;
    const required = op.requestBody?.required ? 'required' : 'optional';
    blocks.push(`Request body (${code(type)}, ${required}${named ? `, ${named}` : ''}):`);
    if (resolved.description) blocks.push(wrap(resolved.description));
    blocks.push(fields(resolved).join('\n'));
  }
  const responses: string[] = [];
  const problems: string[] = [];
  for (const [status, response] of Object.entries(op.responses)) {
    const types = Object.keys(response.content ?? {});
    if (types.length === 1 && types[0] === 'application/problem+json') {
      problems.push(item(`${code(status)}: ${response.description ?? ''}`));
      continue;
    }
    const bodies = Object.entries(response.content ?? {}).map(([type, media]) =>
      media.schema ? `${typeText(media.schema)}, ${code(type)}` : code(type),
    );
    const headers = Object.keys(response.headers ?? {}).map((h) => code(h));
    const text = `${response.description ?? ''}${headers.length > 0 ? ` Headers: ${headers.join(', ')}.` : ''}`;
    responses.push(item(`${code(status)}${bodies.length > 0 ? ` (${bodies.join('; ')})` : ''}: ${text}`));
  }
  blocks.push('Responses:', responses.join('\n'));
  if (problems.length > 0) blocks.push(`Problems (each a ${schemaLink('Problem')}):`, problems.join('\n'));
  return blocks;
}

/** Hand-written: what holds for every route, which the document says nowhere in one place. */
const CONVENTIONS = [
  'JSON fields are snake_case. Errors are [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) ' +
    '`application/problem+json` with a stable `code` and the `request_id` (also in the `X-Request-Id` response ' +
    'header; send your own `X-Request-Id` to have it used): see [Errors](#errors).',
  'Authentication: `X-API-Key: <key>`, or `Authorization: Bearer <key or access token>` (keys, scopes and tokens: ' +
    '[security.md](security.md)). Every job records its owner; another principal’s job answers 404, exactly like a ' +
    'job that does not exist.',
  'Omitting `model` means the default model (`cars-mpg`). `prediction` is a number for models with one output ' +
    'value, an array otherwise. Concurrent `/v1/predict` calls of one principal and model may share a job (see ' +
    '[architecture.md](architecture.md)): `job_row` says which row of that job is this call’s (a call answered ' +
    '`202` gets a job of its own; `Quern-Job-Row` says its row). `tensor` carries the rows as little-endian float32 values, row after row, in ' +
    'standard base64: for wide rows at high rates it skips parsing JSON numbers (see ' +
    '[benchmarks.md](benchmarks.md)).',
  'How to get results (poll, wait, stream, webhooks), cancel, and retry safely: [results.md](results.md).',
];

/** docs/api.md: every operation of the OpenAPI document, its schemas, and the error codes. */
export function apiPage(doc: OpenApiDocument, facts: ApiFacts): string {
  const operations: { tag: string; method: string; path: string; op: Operation }[] = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = ops[method];
      if (op) operations.push({ tag: op.tags?.[0] ?? 'Other', method, path, op });
    }
  }
  const tags = [...(doc.tags ?? [])];
  for (const { tag } of operations) if (!tags.some((t) => t.name === tag)) tags.push({ name: tag });

  const blocks = [
    '# HTTP API',
    '<!-- Generated by `pnpm docs:generate` from the OpenAPI document the API serves (`GET /openapi.json`), the\n' +
      '     error codes (packages/shared/src/errors.ts, apps/api/src/errors.ts) and the explanations in\n' +
      '     apps/api/src/reference-docs/api-page.ts. Edit those, then regenerate; a test fails while this page is stale. -->',
    wrap(
      `${doc.info.title} ${doc.info.version} (OpenAPI ${doc.openapi}). ${doc.info.description ?? ''} The same ` +
        'document is served at `/openapi.json`, and as interactive documentation at `/docs`.',
    ),
    ...CONVENTIONS.map((c) => wrap(c)),
    '## Operations',
    [
      '| operation | what it does | scope |',
      '| --------- | ------------ | ----- |',
      ...operations.map(({ method, path, op }) => {
        const title = `${method.toUpperCase()} ${path}`;
        const scope = facts.scopes.get(title);
        const who = (op.security ?? []).length === 0 ? 'public' : scope ? code(scope) : 'any credential';
        const summary = `${op.summary ?? ''}${op.deprecated ? ' (deprecated)' : ''}`;
        return `| [${title}](#${anchor(title)}) | ${summary} | ${who} |`;
      }),
    ].join('\n'),
  ];
  const seen = new Map<string, string>();
  for (const tag of tags) {
    const ofTag = operations.filter((o) => o.tag === tag.name);
    if (ofTag.length === 0) continue;
    blocks.push(`## ${tag.name}`);
    if (tag.description) blocks.push(wrap(tag.description));
    for (const { method, path, op } of ofTag) {
      // An alias (`POST /predict`) points at the operation it repeats instead of repeating it.
      const { description, parameters, requestBody, responses } = op;
      const signature = JSON.stringify({ description, parameters, requestBody, responses });
      const title = `${method.toUpperCase()} ${path}`;
      const same = seen.get(signature);
      if (!same) seen.set(signature, `[${code(title)}](#${anchor(title)})`);
      blocks.push(...operationSection(doc, method, path, op, facts, same));
    }
  }

  blocks.push(
    '## Served outside the document',
    facts.extraRoutes
      .map(({ route, description, scope }) => {
        const who = scope === undefined ? '' : scope === null ? ' Any valid credential.' : ` Scope ${code(scope)}.`;
        return item(`${code(route)}: ${description}${who}`);
      })
      .join('\n'),
  );

  // The schemas responses (and other schemas) refer to; a request body's own fields are listed
  // with its operation.
  const schemas = doc.components?.schemas ?? {};
  const shown = new Set<string>();
  for (const { op } of operations) refsIn(op.responses, shown);
  for (const schema of Object.values(schemas)) refsIn(schema.properties ?? {}, shown);
  for (const schema of Object.values(schemas)) refsIn([schema.anyOf, schema.oneOf, schema.items], shown);
  blocks.push('## Schemas');
  for (const name of Object.keys(schemas).filter((n) => shown.has(n))) {
    const schema = schemas[name] ?? {};
    blocks.push(`### ${name}`);
    if (schema.description) blocks.push(wrap(schema.description));
    if (schema.properties || schema.allOf) blocks.push(fields(schema).join('\n'));
    else blocks.push(wrap(`${typeText(schema)}.`));
  }

  const codes = (Object.entries(ErrorCodes) as [ErrorCode, number][]).sort((a, b) => a[1] - b[1]);
  blocks.push(
    '## Errors',
    wrap(
      'Every error is a [Problem](#problem) (`application/problem+json`); clients switch on `code`, never on ' +
        '`detail`. Each code has exactly one status; its `type` is `urn:quern:problem:<code>`. `503` and `429` ' +
        'answers carry `Retry-After`.',
    ),
    codes
      .map(([c, status]) => item(`**${code(c)}** (${status}, ${facts.titles[c]}): ${ERROR_EXPLANATIONS[c]}`))
      .join('\n'),
  );
  return page(blocks);
}
