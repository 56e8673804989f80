import {
  type ApiConfig,
  ensureRouting,
  type KeySpace,
  type Logger,
  type ModelRouting,
  QuernError,
  type RedisClient,
  readShadowStats,
  readVersionLoads,
  resetShadowStats,
  type ShadowStats,
  type VersionRouting,
  writeRouting,
} from '@quern/shared';
import type { ModelRegistry } from './model-registry';

/** A version of a model as the versions routes show it. */
export interface VersionView {
  name: string;
  version: string;
  /** `available`: in the manifest, not loaded. */
  state: 'live' | 'shadow' | 'draining' | 'available';
  default: boolean;
  /** Percent of unpinned requests it gets (the default version: what the canaries leave). */
  weight: number;
  sample?: number | undefined;
  drain_until?: string | undefined;
  /** Shadow runs: how far its outputs were from the default version's on the sampled rows. */
  shadow?: ShadowStats | undefined;
}

/** What a load reports: the view, and how many workers hold the version. */
export interface LoadOutcome {
  view: VersionView;
  workers_ready: number;
}

export interface LoadOptions {
  mode: 'live' | 'shadow';
  weight: number;
  sample: number;
}

/** How long a load waits for the workers' reports, and how often it looks. */
const LOAD_WAIT_MS = 60_000;
const LOAD_POLL_MS = 100;

/**
 * The admin side of model versions: loads, unloads and traffic splits, written as the model
 * routing (model-routing.ts) that every worker and API process follows. A load waits until every
 * live worker has loaded and warmed the version or one refused it (hash, input/output spec,
 * memory budget); a refusal undoes the change, so the running versions keep serving as before.
 */
export class ModelAdmin {
  constructor(
    private readonly models: ModelRegistry,
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly config: Pick<ApiConfig, 'QUERN_HEARTBEAT_TTL_MS' | 'QUERN_JOB_TIMEOUT_MAX_MS'>,
    private readonly logger: Logger,
  ) {}

  private known(name: string): void {
    if (!this.models.find(name)) {
      throw new QuernError('model_not_found', `no model named "${name}"; GET /v1/models lists them`);
    }
  }

  private async current(name: string): Promise<ModelRouting> {
    this.known(name);
    this.models.refreshManifest();
    const routing = await ensureRouting(this.redis, this.keys, this.models.currentManifest, name);
    if (!routing) throw new QuernError('model_not_found', `no model named "${name}"`);
    return routing;
  }

  private async view(name: string, version: string, routing: ModelRouting): Promise<VersionView> {
    const r: VersionRouting | undefined = routing.versions[version];
    const isDefault = routing.default_version === version;
    const canaryWeights = Object.entries(routing.versions)
      .filter(([v, x]) => v !== routing.default_version && x.state === 'live')
      .reduce((sum, [, x]) => sum + x.weight, 0);
    const draining = r?.state === 'draining' && (r.drain_until ?? 0) <= Date.now();
    const shadow = r ? await readShadowStats(this.redis, this.keys, name, version) : undefined;
    return {
      name,
      version,
      state: !r || draining ? 'available' : r.state,
      default: isDefault,
      weight: isDefault ? Math.max(0, 100 - canaryWeights) : r?.state === 'live' ? r.weight : 0,
      ...(r?.sample !== undefined ? { sample: r.sample } : {}),
      ...(r?.state === 'draining' && r.drain_until ? { drain_until: new Date(r.drain_until).toISOString() } : {}),
      ...(shadow ? { shadow } : {}),
    };
  }

  /** Every version of a model the manifest holds, with its state and traffic share now. */
  async versions(name: string): Promise<VersionView[]> {
    const routing = await this.current(name);
    return Promise.all(this.models.manifestVersions(name).map((e) => this.view(name, e.version, routing)));
  }

  async version(name: string, version: string): Promise<VersionView> {
    const routing = await this.current(name);
    if (!this.models.findVersion(name, version)) {
      throw new QuernError('model_not_found', `model ${name} has no version "${version}" in its manifest`);
    }
    return this.view(name, version, routing);
  }

  private async write(name: string, routing: ModelRouting): Promise<ModelRouting> {
    const next = await writeRouting(this.redis, this.keys, name, routing);
    if (!next) {
      throw new QuernError('service_unavailable', `the routing of ${name} changed while this call ran; retry it`, {
        headers: { 'retry-after': '1' },
      });
    }
    this.models.setRouting(name, next);
    return next;
  }

  /**
   * Loads a version on every worker (live, with a canary weight, or as a shadow) and waits until
   * each live worker has it warmed, or one refused it: then the change is undone and the reason
   * is the `422` an operator sees.
   */
  async load(name: string, version: string, options: LoadOptions): Promise<LoadOutcome> {
    const routing = await this.current(name);
    if (!this.models.findVersion(name, version)) {
      throw new QuernError('model_not_found', `model ${name} has no version "${version}" in its manifest`);
    }
    if (options.mode === 'shadow' && version === routing.default_version) {
      throw new QuernError('validation_failed', `version ${version} is the default of ${name}: it cannot be a shadow`, {
        errors: [{ field: 'mode', message: 'the default version answers live traffic; shadow another version' }],
      });
    }
    if (options.mode === 'live') this.checkWeights(routing, { [version]: options.weight });
    const before = routing.versions[version];
    const startedAt = Date.now();
    const next: ModelRouting = {
      ...routing,
      versions: {
        ...routing.versions,
        [version]:
          options.mode === 'shadow'
            ? { state: 'shadow', weight: 0, sample: options.sample }
            : { state: 'live', weight: version === routing.default_version ? 0 : options.weight },
      },
    };
    if (options.mode === 'shadow' && before?.state !== 'shadow') {
      await resetShadowStats(this.redis, this.keys, name, version);
    }
    await this.write(name, next);
    const outcome = await this.waitForWorkers(name, version, startedAt);
    if (outcome.refused) {
      // Back to what it was: the version is not held anywhere and the running ones serve on.
      const now = await this.current(name);
      const undo = { ...now, versions: { ...now.versions } };
      if (before) undo.versions[version] = before;
      else delete undo.versions[version];
      await this.write(name, undo);
      throw new QuernError('validation_failed', `version ${version} of ${name} was refused: ${outcome.refused}`, {
        errors: [{ field: 'version', message: outcome.refused }],
      });
    }
    if (outcome.ready === 0) {
      this.logger.warn({ model: name, version }, 'no worker confirmed a model version load');
    }
    this.logger.info({ model: name, version, mode: options.mode, workers: outcome.ready }, 'model version loaded');
    return { view: await this.view(name, version, await this.current(name)), workers_ready: outcome.ready };
  }

  private async waitForWorkers(
    name: string,
    version: string,
    since: number,
  ): Promise<{ ready: number; refused?: string | undefined }> {
    const deadline = Date.now() + LOAD_WAIT_MS;
    for (;;) {
      const now = Date.now();
      const alive = await this.redis.zrangebyscore(
        this.keys.workers(),
        now - this.config.QUERN_HEARTBEAT_TTL_MS,
        '+inf',
      );
      const reports = await readVersionLoads(this.redis, this.keys, name, version);
      let ready = 0;
      for (const worker of alive) {
        const report = reports.get(worker);
        if (!report || report.at < since) continue;
        if (report.state === 'refused') return { ready, refused: report.reason ?? 'refused' };
        ready++;
      }
      // No worker running: nobody can confirm now; workers that start load it from the routing.
      if (alive.length === 0 || ready >= alive.length || now >= deadline) return { ready };
      await new Promise((resolve) => setTimeout(resolve, LOAD_POLL_MS));
    }
  }

  /**
   * Stops a version taking jobs; workers keep it until every job already queued for it has run
   * or passed its deadline, then release it. The default version is unloaded only after another
   * one is made the default.
   */
  async unload(name: string, version: string): Promise<VersionView> {
    const routing = await this.current(name);
    const r = routing.versions[version];
    if (!r || r.state === 'draining') {
      throw new QuernError('model_not_found', `version ${version} of ${name} is not loaded`);
    }
    if (routing.default_version === version) {
      throw new QuernError(
        'validation_failed',
        `version ${version} is the default of ${name}: make another version the default first`,
        { errors: [{ field: 'version', message: 'is the default version' }] },
      );
    }
    const next = await this.write(name, {
      ...routing,
      versions: {
        ...routing.versions,
        [version]: {
          state: 'draining',
          weight: 0,
          since: Date.now(),
          drain_until: Date.now() + this.config.QUERN_JOB_TIMEOUT_MAX_MS,
        },
      },
    });
    this.logger.info({ model: name, version }, 'model version unloading');
    return this.view(name, version, next);
  }

  /**
   * Sets the default version (a promotion: it takes all unpinned traffic the canaries leave) and
   * the canary weights (a rollback sets them to 0). Both name live versions only.
   */
  async route(
    name: string,
    change: { default_version?: string | undefined; weights?: Record<string, number> | undefined },
  ): Promise<VersionView[]> {
    const routing = await this.current(name);
    const versions = { ...routing.versions };
    const refuse = (field: string, message: string) =>
      new QuernError('validation_failed', `${field}: ${message}`, { errors: [{ field, message }] });
    const defaultVersion = change.default_version ?? routing.default_version;
    if (versions[defaultVersion]?.state !== 'live') {
      throw refuse('default_version', `version ${defaultVersion} of ${name} is not live; load it first`);
    }
    for (const [version, weight] of Object.entries(change.weights ?? {})) {
      const r = versions[version];
      if (r?.state !== 'live') throw refuse(`weights.${version}`, `version ${version} of ${name} is not live`);
      versions[version] = { ...r, weight };
    }
    // The new default takes what the canaries leave: its own weight is not a canary's.
    versions[defaultVersion] = { ...(versions[defaultVersion] as VersionRouting), weight: 0 };
    const next = { ...routing, default_version: defaultVersion, versions };
    this.checkWeights(next, {});
    await this.write(name, next);
    this.logger.info({ model: name, default_version: defaultVersion, weights: change.weights }, 'model routing set');
    return this.versions(name);
  }

  private checkWeights(routing: ModelRouting, extra: Record<string, number>): void {
    const weights: Record<string, number> = {};
    for (const [v, r] of Object.entries(routing.versions)) {
      if (r.state === 'live' && v !== routing.default_version) weights[v] = r.weight;
    }
    for (const [v, w] of Object.entries(extra)) if (v !== routing.default_version) weights[v] = w;
    const total = Object.values(weights).reduce((a, b) => a + b, 0);
    if (total > 100) {
      throw new QuernError('validation_failed', `weights: the canary weights add up to ${total}%, more than 100`, {
        errors: [{ field: 'weights', message: `add up to ${total}, more than 100` }],
      });
    }
  }
}
