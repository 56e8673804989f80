import { z } from '@hono/zod-openapi';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';

/**
 * When the tutorial's paths (`/predict`, `/batch-predict`) became deprecated aliases: the first
 * release, where the `/v1` routes came in beside them (2026-11-30T00:00:00Z).
 */
export const ALIASES_DEPRECATED_AT = Date.UTC(2026, 10, 30) / 1000;

/**
 * Headers of every answer of a deprecated alias, errors included (set before the handler, like
 * the security headers). `Deprecation` is RFC 9745's structured-field date (`@` and Unix
 * seconds): the resource is deprecated since then, and still works. RFC 9745 itself defines only
 * the `deprecation` link relation (to a page about the deprecation); its drafts recommended
 * `successor-version`, `latest-version` or `alternate` to point at the replacement and dropped
 * that section before publication. The link here is `successor-version` (RFC 5829, section 3.6,
 * in IANA's registry): the `/v1` route is the next version of this one. `alternate` would say it
 * is the same resource in another form, which it is not (its batch answer has another shape).
 * No `Sunset` (RFC 8594): no removal date is decided.
 */
export function deprecatedAlias(successor: string) {
  const deprecation = `@${ALIASES_DEPRECATED_AT}`;
  const link = `<${successor}>; rel="successor-version"`;
  return createMiddleware<AppEnv>(async (c, next) => {
    c.header('deprecation', deprecation);
    c.header('link', link);
    await next();
  });
}

/** The same headers as the OpenAPI document shows them on an alias's answers. */
export function deprecationHeaderShape(successor: string) {
  return {
    deprecation: z.string().openapi({
      description: 'RFC 9745: this path is deprecated since this date (`@` and Unix seconds).',
      example: `@${ALIASES_DEPRECATED_AT}`,
    }),
    link: z.string().openapi({
      description: 'The route that replaces this one (RFC 8288 `successor-version`).',
      example: `<${successor}>; rel="successor-version"`,
    }),
  };
}
