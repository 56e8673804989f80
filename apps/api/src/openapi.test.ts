import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT, startTestRedis, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { createServices, type Services } from './services/services';

let redis: TestRedis;
let services: Services;
interface Media {
  schema?: { $ref?: string; example?: unknown };
  example?: unknown;
  examples?: unknown;
}
let doc: {
  paths: Record<
    string,
    Record<
      string,
      {
        operationId?: string;
        responses: Record<string, { content?: Record<string, Media> }>;
        requestBody?: { content: Record<string, Media> };
        security?: unknown[];
      }
    >
  >;
  components: { schemas: Record<string, { example?: unknown }> };
};
const dir = mkdtempSync(join(tmpdir(), 'quern-openapi-'));

beforeAll(async () => {
  redis = await startTestRedis();
  const config = testConfig(redis);
  const logger = createLogger('api', 'silent');
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  doc = (await (await createApp(services, logger).request('/openapi.json')).json()) as typeof doc;
});

afterAll(async () => {
  await services.close();
  await redis.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the OpenAPI document', () => {
  it('lints clean with Redocly (no errors, no warnings)', async () => {
    const file = join(dir, 'openapi.json');
    writeFileSync(file, JSON.stringify(doc));
    const run = promisify(execFile);
    const bin = join(REPO_ROOT, 'node_modules/.bin/redocly');
    const result = await run(bin, ['lint', file, '--config', join(REPO_ROOT, 'redocly.yaml'), '--format', 'json'], {
      cwd: REPO_ROOT,
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
    }).catch((err: { stdout: string; code: number }) => ({ stdout: err.stdout, code: err.code }));
    const report = JSON.parse(result.stdout) as { problems: { ruleId: string; severity: string; message: string }[] };
    expect(report.problems.map((p) => `${p.severity} ${p.ruleId}: ${p.message}`)).toEqual([]);
  });

  it('gives every operation an id, problem responses and, where protected, a security requirement', () => {
    const ids = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        expect(op.operationId, `${method} ${path}`).toBeTruthy();
        ids.add(op.operationId as string);
        if ((op.security ?? []).length > 0) {
          expect(Object.keys(op.responses), `${method} ${path}`).toEqual(expect.arrayContaining(['401', '403', '429']));
        }
      }
    }
    expect(ids.size).toBe(Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0));
  });

  it('gives every operation an example: of its request body, and of each successful answer with a body', () => {
    const exampleOf = (media: Media): unknown => {
      if (media.example !== undefined || media.examples !== undefined) return media.example ?? media.examples;
      const ref = media.schema?.$ref;
      return ref ? doc.components.schemas[ref.split('/').pop() as string]?.example : media.schema?.example;
    };
    const missing: string[] = [];
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const bodies = [
          ...Object.entries(op.requestBody?.content ?? {}).map(([type, media]) => ({ at: `request ${type}`, media })),
          ...Object.entries(op.responses)
            .filter(([status]) => status.startsWith('2'))
            .flatMap(([status, r]) =>
              Object.entries(r.content ?? {}).map(([type, media]) => ({ at: `${status} ${type}`, media })),
            ),
        ];
        for (const { at, media } of bodies) {
          // Raw bytes (the OIP's binary extension) have no example worth writing as JSON text.
          if (at.endsWith('application/octet-stream')) continue;
          if (exampleOf(media) === undefined) missing.push(`${method.toUpperCase()} ${path}: ${at}`);
        }
      }
    }
    expect(missing).toEqual([]);
  });
});
