/**
 * `pnpm quern …`: operator commands against the service's Redis.
 *
 *   pnpm quern keys create --name NAME [--tier free|premium] [--scopes predict,jobs:read]
 *   pnpm quern keys list
 *   pnpm quern keys revoke KEY_ID
 *
 * Add --json for machine-readable output. The key is printed once, at creation.
 *
 * Which Redis: REDIS_URL (or REDIS_SENTINELS / REDIS_CLUSTER_NODES) when set; else the Redis of a
 * running `pnpm start`, which records it in `.data/dev.json`; else redis://127.0.0.1:6379. The
 * last two are named on stderr, and an unreachable Redis is named in the error.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  type CliConfig,
  ConfigError,
  createRedis,
  devDataDir,
  devStatePath,
  KeySpace,
  loadConfig,
  type RedisClient,
  readDevState,
  redactRedisUrl,
  waitForRedis,
} from '@quern/shared';
import { type ApiKeyRecord, KeyStore } from './services/key-store';
import { isScope, SCOPES, type Scope, TIERS, type Tier } from './services/principal';

const USAGE = `usage:
  pnpm quern keys create --name NAME [--tier free|premium] [--scopes ${SCOPES.join(',')}] [--json]
  pnpm quern keys list [--json]
  pnpm quern keys revoke KEY_ID [--json]`;

class UsageError extends Error {}

function row(r: ApiKeyRecord): string {
  const revoked = r.revoked_at ? `revoked ${new Date(r.revoked_at).toISOString()}` : 'active';
  return `${r.id}  ${r.prefix}…  ${r.tier.padEnd(7)}  ${r.scopes.join(',').padEnd(34)}  ${revoked}  ${r.name}`;
}

/** How long a Redis gets to answer before the CLI gives up on it. */
const CONNECT_TIMEOUT_MS = 5_000;

/** The Redis a command talks to, and how it was chosen. */
export interface RedisTarget {
  config: CliConfig;
  /** The Redis, fit to print (no password). */
  described: string;
  /** How it was chosen, for the notes and errors. */
  from: 'environment' | 'pnpm start' | 'default';
  /** The state file it came from (for `pnpm start`). */
  stateFile?: string;
}

function describe(config: CliConfig): string {
  if (config.REDIS_CLUSTER_NODES.length > 0) return `the Redis Cluster at ${config.REDIS_CLUSTER_NODES.join(',')}`;
  if (config.REDIS_SENTINELS.length > 0)
    return `the Redis of Sentinels ${config.REDIS_SENTINELS.join(',')} (master ${config.REDIS_SENTINEL_MASTER})`;
  return redactRedisUrl(config.REDIS_URL);
}

/**
 * Chooses the Redis from the environment alone (nothing is connected): REDIS_URL, Sentinels or
 * Cluster when set; else the Redis a `pnpm start` recorded (still to be checked); else the default.
 */
export function redisTarget(env: NodeJS.ProcessEnv, cwd = process.cwd()): RedisTarget {
  if (env.REDIS_URL || env.REDIS_SENTINELS || env.REDIS_CLUSTER_NODES) {
    const config = loadConfig(env, 'cli');
    return { config, described: describe(config), from: 'environment' };
  }
  const dataDir = devDataDir(env, cwd);
  const state = dataDir ? readDevState(dataDir) : undefined;
  if (dataDir && state) {
    const config = loadConfig(
      {
        ...env,
        REDIS_URL: state.redis_url,
        QUERN_REDIS_PREFIX: env.QUERN_REDIS_PREFIX ?? state.redis_prefix,
      },
      'cli',
    );
    return { config, described: describe(config), from: 'pnpm start', stateFile: devStatePath(dataDir) };
  }
  const config = loadConfig(env, 'cli');
  return { config, described: describe(config), from: 'default' };
}

/** What the CLI says about a Redis it chose by itself (nothing for one the environment names). */
export function targetNotes(target: RedisTarget): string[] {
  if (target.from === 'pnpm start') {
    return [`quern: using the Redis of pnpm start, ${target.described} (${target.stateFile})`];
  }
  if (target.from === 'default') {
    return [
      `quern: using ${target.described}: REDIS_URL is not set and no pnpm start is running.`,
      'quern: set REDIS_URL=redis://HOST:PORT to use another Redis.',
    ];
  }
  return [];
}

/** Connects to the chosen Redis, or throws an error that names it and says how to point the CLI elsewhere. */
async function connect(target: RedisTarget, note: (line: string) => void): Promise<RedisClient> {
  for (const line of targetNotes(target)) note(line);
  const redis = createRedis(target.config, 'consumer', { name: 'cli' });
  redis.on('error', () => undefined); // the timeout below reports it
  try {
    await waitForRedis(redis, CONNECT_TIMEOUT_MS);
    return redis;
  } catch {
    redis.disconnect();
    const seconds = CONNECT_TIMEOUT_MS / 1000;
    if (target.from === 'pnpm start') {
      throw new Error(
        `${target.described}, recorded by pnpm start in ${target.stateFile}, does not answer within ${seconds} s: ` +
          'is pnpm start still running? Start it again, or set REDIS_URL to the Redis you mean.',
      );
    }
    throw new Error(
      `cannot reach Redis at ${target.described} within ${seconds} s` +
        (target.from === 'default' ? ' (the default: REDIS_URL is not set and no pnpm start is running)' : '') +
        '. Start the service with pnpm start, or set REDIS_URL to the Redis it uses.',
    );
  }
}

/**
 * Runs one command; returns the exit code (2 for a usage error, printed to `out`). Notes on which
 * Redis is used go to `note` (stderr), so `--json` output stays clean.
 */
export async function runCli(
  argv: string[],
  out: (line: string) => void,
  env = process.env,
  note: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<number> {
  try {
    return await run(argv, out, env, note);
  } catch (err) {
    const parseError = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    if (!(err instanceof UsageError) && !parseError) throw err;
    out(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
}

async function run(
  argv: string[],
  out: (line: string) => void,
  env: NodeJS.ProcessEnv,
  note: (line: string) => void,
): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      tier: { type: 'string', default: 'free' },
      scopes: { type: 'string', default: 'predict,jobs:read,jobs:cancel' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [group, command, arg] = positionals;
  if (values.help || group !== 'keys' || !command) {
    out(USAGE);
    return values.help ? 0 : 2;
  }
  const target = redisTarget(env);
  const redis = await connect(target, note);
  try {
    const store = new KeyStore(redis, new KeySpace(target.config.QUERN_REDIS_PREFIX));
    switch (command) {
      case 'create': {
        if (!values.name) throw new UsageError('--name is required');
        if (!(TIERS as readonly string[]).includes(values.tier))
          throw new UsageError(`--tier must be one of ${TIERS.join(', ')}`);
        const scopes = values.scopes
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        const bad = scopes.filter((s) => !isScope(s));
        if (bad.length > 0 || scopes.length === 0)
          throw new UsageError(`--scopes takes ${SCOPES.join(', ')}; got ${bad.join(', ') || 'none'}`);
        const { key, record } = await store.create({
          name: values.name,
          tier: values.tier as Tier,
          scopes: scopes as Scope[],
        });
        if (values.json) out(JSON.stringify({ key, ...record }));
        else {
          out(`created ${record.id} (${record.tier}; ${record.scopes.join(', ')})`);
          out('');
          out(`  ${key}`);
          out('');
          out('This is the only time the key is shown. Store it now.');
        }
        return 0;
      }
      case 'list': {
        const records = await store.list();
        if (values.json) out(JSON.stringify(records));
        else if (records.length === 0) out('no keys');
        else for (const r of records) out(row(r));
        return 0;
      }
      case 'revoke': {
        if (!arg) throw new UsageError('keys revoke needs a key id (key_…)');
        const record = await store.revoke(arg);
        if (!record) {
          out(`no key with id ${arg}`);
          return 1;
        }
        out(values.json ? JSON.stringify(record) : `revoked ${record.id} (${record.prefix}…)`);
        return 0;
      }
      default:
        throw new UsageError(`unknown command keys ${command}`);
    }
  } finally {
    redis.disconnect();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runCli(process.argv.slice(2), (line) => process.stdout.write(`${line}\n`)).then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(err instanceof ConfigError ? `${err.message}\n` : `quern: ${err.message}\n`);
      process.exit(1);
    },
  );
}
