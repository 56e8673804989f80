/** A route as Hono lists it (`app.routes`). */
interface ServedRoute {
  method: string;
  path: string;
}

/** Hono's path syntax (`/v1/jobs/:id`, `/docs/assets/:file`, `*`) as a regular expression. */
function routePattern(path: string): RegExp {
  const source = path
    .split('/')
    .map((segment) => {
      if (segment === '*') return '.*';
      if (segment.startsWith(':')) return '[^/]+';
      return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return new RegExp(`^${source}/?$`);
}

/**
 * The methods served on a path, for a `405` with `Allow` (RFC 9110, section 15.5.6) when a
 * request asks a path the app serves with a method it does not: a `404` would say the resource
 * does not exist. Middleware (`ALL`) serves no method of its own. Routes are read on first use,
 * once every route is registered.
 */
export function methodsServed(routes: () => readonly ServedRoute[]): (path: string) => string[] {
  let served: { method: string; pattern: RegExp }[] | undefined;
  return (path) => {
    served ??= routes()
      .filter((r) => r.method !== 'ALL')
      .map((r) => ({ method: r.method, pattern: routePattern(r.path) }));
    const methods = new Set(served.filter((r) => r.pattern.test(path)).map((r) => r.method));
    // Hono answers HEAD with the GET route.
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort();
  };
}
