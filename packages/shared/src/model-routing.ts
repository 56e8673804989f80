import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { KeySpace } from './keys';
import { type ModelEntry, type ModelManifest, manifestVersions } from './model-manifest';
import type { RedisClient } from './redis';

/**
 * Which versions of a model run, and how unpinned traffic is split between them: the one owner
 * of the routing format that crosses Redis. The API writes it (admin routes) and reads it to
 * route requests; workers read it to know which versions to hold, and hear every change on one
 * channel, so a version is loaded or unloaded without a restart.
 *
 * - `live`: loaded by every worker, reachable by pinning (`name@version`) and by its `weight`.
 * - `shadow`: loaded by every worker; gets a copy of a `sample` of the rows the default version
 *   answered, after the answer, and records how far its outputs are from the live ones.
 * - `draining`: takes no new jobs; workers keep it until `drain_until` (the deadline of any job
 *   already queued for it), then release it. A version not listed is not loaded.
 */
export const VersionRouting = z.object({
  state: z.enum(['live', 'shadow', 'draining']),
  /** Percent of unpinned requests this (non-default) version gets; the default version gets the rest. */
  weight: z.number().min(0).max(100),
  /** Shadow versions: the fraction of live jobs whose rows it also runs. */
  sample: z.number().min(0).max(1).optional(),
  /** Draining versions: epoch ms after which no job for it can still run. */
  drain_until: z.number().int().optional(),
  /** Draining versions: when the unload was asked for. */
  since: z.number().int().optional(),
});
export type VersionRouting = z.infer<typeof VersionRouting>;

export const ModelRouting = z.object({
  /** Increases with every write, so a reader can tell a newer state from an older one. */
  rev: z.number().int().min(0),
  default_version: z.string().min(1),
  versions: z.record(z.string(), VersionRouting),
});
export type ModelRouting = z.infer<typeof ModelRouting>;

/** The routing a model has before any operator changed it: every manifest version live, the default one taking all traffic. */
export function initialRouting(manifest: ModelManifest, name: string): ModelRouting | undefined {
  const versions = manifestVersions(manifest, name);
  const first = versions[0];
  if (!first) return undefined;
  return {
    rev: 0,
    default_version: first.version,
    versions: Object.fromEntries(versions.map((v) => [v.version, { state: 'live' as const, weight: 0 }])),
  };
}

/**
 * The routing to follow: the stored one, unless its default version is no longer in the manifest
 * (the manifest replaced the model's version since, as in an upgrade): then the manifest's initial one.
 */
export function effectiveRouting(
  stored: ModelRouting | undefined,
  manifest: ModelManifest,
  name: string,
): ModelRouting | undefined {
  if (stored && manifestVersions(manifest, name).some((m) => m.version === stored.default_version)) return stored;
  const initial = initialRouting(manifest, name);
  return initial && stored ? { ...initial, rev: stored.rev } : initial;
}

/** Versions a worker must hold now: live, shadow, and draining ones whose queued jobs may still run. */
export function heldVersions(routing: ModelRouting, now = Date.now()): string[] {
  return Object.entries(routing.versions)
    .filter(([, v]) => v.state !== 'draining' || (v.drain_until ?? 0) > now)
    .map(([version]) => version);
}

/** Versions a request may pin: live ones (shadow and draining versions take no jobs of their own). */
export function pinnableVersions(routing: ModelRouting): string[] {
  return Object.entries(routing.versions)
    .filter(([, v]) => v.state === 'live')
    .map(([version]) => version);
}

/** Shadow versions of a model with their sample fraction. */
export function shadowVersions(routing: ModelRouting): { version: string; sample: number }[] {
  return Object.entries(routing.versions)
    .filter(([, v]) => v.state === 'shadow')
    .map(([version, v]) => ({ version, sample: v.sample ?? 0 }));
}

/**
 * The version an unpinned request gets: a bucket in [0, 100) from a hash of the sticky key (the
 * caller's principal) and the model, so one caller keeps seeing one version while the weights
 * stay; canary versions take their weight's share of buckets in version order, the default
 * version the rest.
 */
export function pickVersion(routing: ModelRouting, name: string, stickyKey: string): string {
  const canaries = Object.entries(routing.versions)
    .filter(([version, v]) => v.state === 'live' && v.weight > 0 && version !== routing.default_version)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (canaries.length === 0) return routing.default_version;
  const digest = createHash('sha256').update(`${name}\0${stickyKey}`).digest();
  const bucket = (digest.readUInt32BE(0) / 0x1_0000_0000) * 100;
  let upTo = 0;
  for (const [version, v] of canaries) {
    upTo += v.weight;
    if (bucket < upTo) return version;
  }
  return routing.default_version;
}

function decodeRouting(raw: string | null | undefined): ModelRouting | undefined {
  if (!raw) return undefined;
  try {
    const parsed = ModelRouting.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** The stored routing of every model that has one (models never changed have none: see `initialRouting`). */
export async function readRoutings(redis: RedisClient, keys: KeySpace): Promise<Map<string, ModelRouting>> {
  const all = await redis.hgetall(keys.modelRouting());
  const out = new Map<string, ModelRouting>();
  for (const [name, raw] of Object.entries(all)) {
    const routing = decodeRouting(raw);
    if (routing) out.set(name, routing);
  }
  return out;
}

/** A model's routing: the stored one, else the manifest's initial one. */
export async function readRouting(
  redis: RedisClient,
  keys: KeySpace,
  manifest: ModelManifest,
  name: string,
): Promise<ModelRouting | undefined> {
  return effectiveRouting(decodeRouting(await redis.hget(keys.modelRouting(), name)), manifest, name);
}

/**
 * The model's routing, storing the manifest's initial one first if none is stored: versions added
 * to the manifest later are then `available` until an operator loads them, rather than taken as live.
 */
export async function ensureRouting(
  redis: RedisClient,
  keys: KeySpace,
  manifest: ModelManifest,
  name: string,
): Promise<ModelRouting | undefined> {
  const initial = initialRouting(manifest, name);
  if (initial) await redis.hsetnx(keys.modelRouting(), name, JSON.stringify(initial));
  return readRouting(redis, keys, manifest, name);
}

/** Sets the routing only if the stored one still has the revision the change was made from. */
const WRITE_IF_REV = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and type(decoded) == 'table' and decoded.rev ~= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`;

/**
 * Stores a model's routing (its `rev` one above the one it was made from) and tells every
 * process; undefined, and nothing written, when another write came first since `routing` was read
 * (two operators at once): the caller reads again.
 */
export async function writeRouting(
  redis: RedisClient,
  keys: KeySpace,
  name: string,
  routing: ModelRouting,
): Promise<ModelRouting | undefined> {
  const next = { ...routing, rev: routing.rev + 1 };
  const written = await redis.eval(WRITE_IF_REV, 1, keys.modelRouting(), name, JSON.stringify(next), routing.rev);
  if (written !== 1) return undefined;
  await redis.publish(keys.modelRoutingChannel(), name);
  return next;
}

/**
 * Calls `onChange(name)` whenever a model's routing changes. The subscription needs a connection
 * of its own; ioredis subscribes again after a reconnect (a change missed meanwhile is caught by
 * the reader's periodic refresh).
 */
export async function listenForRouting(
  subscriber: RedisClient,
  keys: KeySpace,
  onChange: (name: string) => void,
): Promise<void> {
  const channel = keys.modelRoutingChannel();
  subscriber.on('message', (from: string, message: string) => {
    if (from === channel) onChange(message);
  });
  await subscriber.subscribe(channel);
}

/** What one worker reports about one version it was asked to hold. */
export const VersionLoadReport = z.object({
  state: z.enum(['ready', 'refused']),
  /** Why it was refused (hash mismatch, input/output spec, memory budget), for the admin error. */
  reason: z.string().optional(),
  at: z.number().int(),
});
export type VersionLoadReport = z.infer<typeof VersionLoadReport>;

/** Records a worker's load outcome of `name@version` (read by the admin routes). */
export async function reportVersionLoad(
  redis: RedisClient,
  keys: KeySpace,
  workerId: string,
  model: Pick<ModelEntry, 'name' | 'version'>,
  report: VersionLoadReport,
): Promise<void> {
  await redis.hset(keys.modelLoads(model.name), `${workerId}|${model.version}`, JSON.stringify(report));
}

/** Each worker's report about `version` of `name`, by worker id. */
export async function readVersionLoads(
  redis: RedisClient,
  keys: KeySpace,
  name: string,
  version: string,
): Promise<Map<string, VersionLoadReport>> {
  const all = await redis.hgetall(keys.modelLoads(name));
  const out = new Map<string, VersionLoadReport>();
  for (const [field, raw] of Object.entries(all)) {
    const bar = field.lastIndexOf('|');
    if (bar < 0 || field.slice(bar + 1) !== version) continue;
    try {
      const parsed = VersionLoadReport.safeParse(JSON.parse(raw));
      if (parsed.success) out.set(field.slice(0, bar), parsed.data);
    } catch {
      // not a report: ignored
    }
  }
  return out;
}

/** Differences between a shadow version's outputs and the live version's, summed over sampled rows. */
export interface ShadowStats {
  rows: number;
  /** Largest absolute difference of any output value of any sampled row. */
  max_abs_diff: number;
  /** Mean over sampled rows of each row's mean absolute difference. */
  mean_abs_diff: number;
}

const SHADOW_ADD = `
redis.call('HINCRBY', KEYS[1], 'rows', ARGV[1])
redis.call('HINCRBYFLOAT', KEYS[1], 'sum', ARGV[2])
local m = tonumber(redis.call('HGET', KEYS[1], 'max') or '-1')
if tonumber(ARGV[3]) > m then redis.call('HSET', KEYS[1], 'max', ARGV[3]) end
return 1`;

/** Adds sampled rows to a shadow version's differences: their count, the sum of their row means, their max. */
export async function addShadowStats(
  redis: RedisClient,
  keys: KeySpace,
  name: string,
  version: string,
  rows: number,
  sumOfRowMeans: number,
  maxAbsDiff: number,
): Promise<void> {
  await redis.eval(SHADOW_ADD, 1, keys.shadowStats(name, version), rows, sumOfRowMeans, maxAbsDiff);
}

/** A shadow version's differences so far; undefined when no row was compared. */
export async function readShadowStats(
  redis: RedisClient,
  keys: KeySpace,
  name: string,
  version: string,
): Promise<ShadowStats | undefined> {
  const raw = await redis.hgetall(keys.shadowStats(name, version));
  const rows = Number(raw.rows ?? 0);
  if (!(rows > 0)) return undefined;
  return { rows, max_abs_diff: Number(raw.max ?? 0), mean_abs_diff: Number(raw.sum ?? 0) / rows };
}

/** Forgets a version's shadow differences (it starts a new shadow run). */
export async function resetShadowStats(redis: RedisClient, keys: KeySpace, name: string, version: string) {
  await redis.del(keys.shadowStats(name, version));
}
