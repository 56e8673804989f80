import { startTestRedis, testConfig } from '@quern/devkit';
import { createLogger, ErrorCodes, loadManifest } from '@quern/shared';
import { createApp } from '../app';
import { PROBLEM_TITLES } from '../errors';
import { requiredScopeOf } from '../middleware/auth';
import type { Scope } from '../services/principal';
import { createServices } from '../services/services';
import { type ApiFacts, apiPage, type OpenApiDocument } from './api-page';
import { configurationPage } from './configuration-page';

/**
 * What the app serves besides the operations of its OpenAPI document. Every route it registers
 * must be in the document or start with one of these paths (`referenceDocs` fails otherwise).
 */
const OUTSIDE_THE_DOCUMENT = [
  {
    path: '/docs',
    route: 'GET /docs',
    description: 'Swagger UI over the OpenAPI document (its assets served by the app, no CDN).',
  },
  {
    path: '/redoc',
    route: 'GET /redoc',
    description: 'ReDoc over the same document (the `redoc` package’s standalone bundle, served by the app, no CDN).',
  },
  {
    path: '/openapi.json',
    route: 'GET /openapi.json',
    description: 'The OpenAPI 3.1 document this page is made from.',
  },
  {
    path: '/admin/queues',
    route: '/admin/queues',
    description:
      'Bull Board over every queue (a browser asks for the key as the Basic password). Writes that create jobs or ' +
      'change what a job carries or how queues run are refused; pause, resume, retry, promote, clean, empty and ' +
      'removing jobs stay.',
  },
];

/** `/v1/jobs/:id` as the document writes it: `/v1/jobs/{id}`. */
const documentPath = (path: string): string => path.replace(/:(\w+)/g, '{$1}');

/**
 * The reference pages, by path from the repository root, made from what the app serves: its
 * OpenAPI document and the scopes its routes enforce, read from an app built on a Redis of its
 * own (started and stopped here), and from the config schema. Nothing is written.
 */
export async function referenceDocs(): Promise<Record<string, string>> {
  const redis = await startTestRedis();
  const config = testConfig(redis);
  const logger = createLogger('api', 'silent');
  const services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  try {
    const app = createApp(services, logger);
    const response = await app.request('/openapi.json');
    if (!response.ok) throw new Error(`GET /openapi.json answered ${response.status}`);
    const doc = (await response.json()) as OpenApiDocument;

    const scopes = new Map<string, Scope | null>();
    const undocumented = new Set<string>();
    for (const route of app.routes) {
      const path = documentPath(route.path);
      const scope = requiredScopeOf(route.handler);
      if (scope !== undefined) scopes.set(`${route.method} ${path}`, scope);
      if (route.path === '/*') continue; // middleware of every route
      const documented = doc.paths[path]?.[route.method.toLowerCase()] !== undefined;
      if (!documented && !OUTSIDE_THE_DOCUMENT.some((o) => path === o.path || path.startsWith(`${o.path}/`))) {
        undocumented.add(`${route.method} ${path}`);
      }
    }
    if (undocumented.size > 0) {
      throw new Error(
        `routes missing from the OpenAPI document: ${[...undocumented].join(', ')}; document them, or describe them ` +
          'in OUTSIDE_THE_DOCUMENT (apps/api/src/reference-docs/reference-docs.ts)',
      );
    }
    const facts: ApiFacts = {
      scopes,
      titles: PROBLEM_TITLES,
      extraRoutes: OUTSIDE_THE_DOCUMENT.map((o) => ({
        route: o.route,
        description: o.description,
        scope: scopes.get(`ALL ${o.path}`) ?? scopes.get(`GET ${o.path}`),
      })),
    };
    if (Object.keys(ErrorCodes).some((c) => !(c in PROBLEM_TITLES))) throw new Error('an error code without a title');
    return {
      'docs/api.md': apiPage(doc, facts),
      'docs/configuration.md': configurationPage(),
    };
  } finally {
    await services.close();
    await redis.close();
  }
}
