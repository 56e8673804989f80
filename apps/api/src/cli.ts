/**
 * `pnpm quern …`: operator commands against the Redis in REDIS_URL.
 *
 *   pnpm quern keys create --name NAME [--tier free|premium] [--scopes predict,jobs:read]
 *   pnpm quern keys list
 *   pnpm quern keys revoke KEY_ID
 *
 * Add --json for machine-readable output. The key is printed once, at creation.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, createRedis, KeySpace, loadConfig, waitForRedis } from '@quern/shared';
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

/** Runs one command; returns the exit code (2 for a usage error, printed to `out`). */
export async function runCli(argv: string[], out: (line: string) => void, env = process.env): Promise<number> {
  try {
    return await run(argv, out, env);
  } catch (err) {
    const parseError = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    if (!(err instanceof UsageError) && !parseError) throw err;
    out(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
}

async function run(argv: string[], out: (line: string) => void, env: NodeJS.ProcessEnv): Promise<number> {
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
  const config = loadConfig(env);
  const redis = createRedis(config, 'consumer', { name: 'cli' });
  try {
    await waitForRedis(redis, 5_000);
    const store = new KeyStore(redis, new KeySpace(config.QUERN_REDIS_PREFIX));
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
