import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';

/**
 * What `pnpm start` (the development launcher) tells other commands on the machine: where its
 * Redis is, so `pnpm quern` finds it without REDIS_URL although the embedded Redis takes a new
 * port on every start. The launcher writes it once the service is up and removes it when it
 * stops; a launcher killed without stopping leaves it behind, so readers check that its Redis
 * answers before they trust it.
 */
export const DevStateSchema = z.object({
  /** May carry a password when the launcher was given REDIS_URL: the file is private (0600). */
  redis_url: z.string().regex(/^rediss?:\/\//),
  /** QUERN_REDIS_PREFIX of the launched service, when it was not the default. */
  redis_prefix: z.string().min(1).optional(),
  api_url: z.string(),
  pid: z.number().int().positive(),
  started_at: z.string(),
});
export type DevState = z.infer<typeof DevStateSchema>;

const FILE = 'dev.json';

/**
 * The launcher's data directory as a command run from `cwd` finds it: QUERN_DATA_DIR, else
 * `.data` in the repository root (the nearest directory holding pnpm-workspace.yaml).
 */
export function devDataDir(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string | undefined {
  if (env.QUERN_DATA_DIR) return env.QUERN_DATA_DIR;
  for (let dir = cwd; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return join(dir, '.data');
    if (dirname(dir) === dir) return undefined;
  }
}

export function devStatePath(dataDir: string): string {
  return join(dataDir, FILE);
}

/** Writes the state (whole or not at all: a reader never sees half a file). */
export function writeDevState(dataDir: string, state: DevState): void {
  mkdirSync(dataDir, { recursive: true });
  const path = devStatePath(dataDir);
  const partial = `${path}.${process.pid}.tmp`;
  writeFileSync(partial, `${JSON.stringify(DevStateSchema.parse(state), null, 2)}\n`, { mode: 0o600 });
  renameSync(partial, path);
}

/** The recorded state, or undefined when there is none (or it is unreadable). */
export function readDevState(dataDir: string): DevState | undefined {
  try {
    const parsed = DevStateSchema.safeParse(JSON.parse(readFileSync(devStatePath(dataDir), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Removes the state if the launcher `pid` wrote it (a newer launcher's state stays). */
export function removeDevState(dataDir: string, pid: number): void {
  if (readDevState(dataDir)?.pid === pid) rmSync(devStatePath(dataDir), { force: true });
}

/** A Redis URL fit to print: any password replaced by `***`. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
