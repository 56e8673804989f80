import {
  effectiveRouting,
  ensureRouting,
  type KeySpace,
  type Logger,
  listenForRouting,
  type ModelEntry,
  type ModelManifest,
  type ModelRouting,
  manifestVersions,
  parseModelRef,
  pickVersion,
  pinnableVersions,
  QuernError,
  type RedisClient,
  readRoutings,
} from '@quern/shared';

/**
 * The models the API accepts: every version the manifest holds, and how each model's traffic is
 * routed between them now (model-routing.ts, kept current from Redis by `services.ts`). The API
 * never loads the .onnx files.
 */
export class ModelRegistry {
  private readonly byName: Map<string, ModelEntry>;
  private manifest: ModelManifest;
  private readonly routings = new Map<string, ModelRouting>();

  constructor(
    manifest: ModelManifest,
    /** Reads the manifest again (an operator added a version's file and entry); none in unit tests. */
    private readonly reread?: () => ModelManifest,
  ) {
    this.manifest = manifest;
    this.byName = new Map(manifest.models.map((m) => [m.name, m]));
  }

  /** The manifest as last read (versions added since start included). */
  get currentManifest(): ModelManifest {
    return this.manifest;
  }

  get defaultName(): string {
    return this.manifest.default_model;
  }

  /** One entry per model: the version it serves by default now. */
  list(): ModelEntry[] {
    return [...this.byName.keys()].map((name) => this.defaultEntry(name) as ModelEntry);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /** The model's default version now (undefined for an unknown name). */
  find(name: string): ModelEntry | undefined {
    return this.defaultEntry(name);
  }

  /** One version of a model from the manifest, loaded or not. */
  findVersion(name: string, version: string): ModelEntry | undefined {
    return manifestVersions(this.manifest, name).find((m) => m.version === version);
  }

  /** Every version of a model the manifest holds. */
  manifestVersions(name: string): ModelEntry[] {
    return manifestVersions(this.manifest, name);
  }

  /** The model's routing now: the last one heard from Redis, else the manifest's initial one. */
  routing(name: string): ModelRouting | undefined {
    return effectiveRouting(this.routings.get(name), this.manifest, name);
  }

  /** Takes a routing read from Redis; an older revision than the one held is ignored. */
  setRouting(name: string, routing: ModelRouting): void {
    const held = this.routings.get(name);
    if (held && held.rev > routing.rev) return;
    this.routings.set(name, routing);
  }

  /** Reads the manifest again, so versions added to it since start can be loaded. */
  refreshManifest(): void {
    if (this.reread) this.manifest = this.reread();
  }

  private defaultEntry(name: string): ModelEntry | undefined {
    const base = this.byName.get(name);
    if (!base) return undefined;
    const routing = this.routing(name);
    return (routing && this.findVersion(name, routing.default_version)) ?? base;
  }

  /**
   * The version a request gets: the pinned one of `name@version` (it must be live), else the
   * one the model's canary weights give `stickyKey` (the caller's principal, so one caller sees
   * one version), else the default model's default version; a 404 problem otherwise.
   */
  resolve(ref: string | undefined, stickyKey = ''): ModelEntry {
    const { name, version } = parseModelRef(ref ?? this.manifest.default_model);
    if (!this.byName.has(name)) {
      throw new QuernError('model_not_found', `no model named "${name}"; GET /v1/models lists them`);
    }
    const routing = this.routing(name);
    if (version !== undefined) {
      const entry = this.findVersion(name, version);
      if (!entry || !routing || !pinnableVersions(routing).includes(version)) {
        throw new QuernError(
          'model_not_found',
          `model ${name} has no live version "${version}"; GET /v1/models/${name}/versions lists them`,
        );
      }
      return entry;
    }
    const picked = routing ? this.findVersion(name, pickVersion(routing, name, stickyKey)) : undefined;
    return picked ?? (this.defaultEntry(name) as ModelEntry);
  }
}

/**
 * Keeps `models` current with the routing in Redis: everything now, then each model whose change
 * is published on the routing channel (on `subscriber`, a subscribed connection). Resolves once the
 * first read is done.
 */
export async function syncModelRouting(
  models: ModelRegistry,
  redis: RedisClient,
  subscriber: RedisClient,
  keys: KeySpace,
  logger: Logger,
): Promise<void> {
  const refresh = (name: string) => {
    readRoutings(redis, keys)
      .then((all) => {
        const routing = all.get(name);
        if (routing) models.setRouting(name, routing);
      })
      .catch((err: Error) => logger.warn({ model: name, err: err.message }, 'model routing not read'));
  };
  await listenForRouting(subscriber, keys, (name) => {
    models.refreshManifest();
    refresh(name);
  });
  for (const name of models.names()) {
    const routing = await ensureRouting(redis, keys, models.currentManifest, name);
    if (routing) models.setRouting(name, routing);
  }
}
