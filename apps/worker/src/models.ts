import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  effectiveRouting,
  ensureRouting,
  heldVersions,
  type KeySpace,
  type Logger,
  loadManifest,
  type ModelEntry,
  type ModelManifest,
  type ModelRouting,
  manifestVersions,
  modelRef,
  outputSize,
  type RedisClient,
  readRoutings,
  reportVersionLoad,
  writeRouting,
} from '@quern/shared';
import type { BatchScheduler } from './batch-scheduler';
import type { InferencePool, PoolModel } from './inference-pool';

/**
 * A model version this worker serves: its manifest entry and where its file is. `pool.name` is
 * the version's ref (`name@version`), the key of its sessions in the inference threads and of its
 * batches in the scheduler, so rows of two versions never share a batch.
 */
export interface ServedModel {
  entry: ModelEntry;
  pool: PoolModel;
  /** Size of the .onnx file, for the memory budget. */
  bytes: number;
}

/** Why a version cannot be served here: the admin error an operator sees. */
export class VersionRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VersionRefused';
  }
}

/** Reads a version's file and checks it against the manifest's SHA-256. */
export async function verifyVersion(entry: ModelEntry, modelsDir: string): Promise<ServedModel> {
  const ref = modelRef(entry.name, entry.version);
  const path = join(modelsDir, entry.file);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new VersionRefused(`model ${ref}: cannot read ${path}: ${(err as Error).message}`);
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 !== entry.sha256) {
    throw new VersionRefused(`model ${ref}: ${path} has SHA-256 ${sha256}, the manifest says ${entry.sha256}`);
  }
  return {
    entry,
    bytes: bytes.length,
    pool: {
      name: ref,
      path,
      inputName: entry.input.name,
      outputName: entry.output.name,
      features: entry.input.features,
      outputSize: outputSize(entry),
    },
  };
}

/**
 * Picks the models this worker serves (all, or those named) and checks each file against the
 * manifest's SHA-256, so a worker never serves weights other than the ones the version names.
 * These are the models' default versions; `ModelSet` adds the others.
 */
export async function resolveServedModels(
  manifest: ModelManifest,
  modelsDir: string,
  only: readonly string[],
): Promise<ServedModel[]> {
  const known = new Set(manifest.models.map((m) => m.name));
  const unknown = only.filter((name) => !known.has(name));
  if (unknown.length > 0) {
    throw new Error(`QUERN_WORKER_MODELS names unknown models: ${unknown.join(', ')}`);
  }
  const entries = only.length === 0 ? manifest.models : manifest.models.filter((m) => only.includes(m.name));
  return Promise.all(entries.map((entry) => verifyVersion(entry, modelsDir)));
}

export interface ModelSetOptions {
  modelsDir: string;
  /** The model names this worker serves. */
  names: readonly string[];
  workerId: string;
  redis: RedisClient;
  keys: KeySpace;
  logger: Logger;
  /** Sessions each version opens (inference threads plus the inline one): the memory estimate's factor. */
  sessionsPerVersion: number;
  /** QUERN_WORKER_MODEL_MEMORY_MB; 0: no budget. */
  memoryBudgetMb: number;
}

/** Whether the model's queue still holds a job for the version (a draining version is released when not). */
export type QueueProbe = (name: string, version: string) => Promise<boolean>;

/** A draining version is not looked at before this long after its unload (requests routed just before it). */
const DRAIN_GRACE_MS = 2_000;
/** How often a draining version's queue is looked at. */
const DRAIN_CHECK_MS = 2_000;

/** Versions to load ahead of their jobs: live and shadow ones (a draining one only on demand, for a job of its own). */
function versionsToLoad(routing: ModelRouting): string[] {
  return heldVersions(routing).filter((v) => routing.versions[v]?.state !== 'draining');
}

/**
 * The versions this worker holds, kept in step with the model routing in Redis
 * (model-routing.ts): a version the routing adds is checked (hash, input and output spec,
 * memory budget), loaded and warmed in every inference thread before its jobs run, and the
 * outcome is reported for the admin route that asked; a version the routing drops is released
 * once no batch of it is pending. Versions of other models than `names` are not its business.
 */
export class ModelSet {
  private readonly held = new Map<string, ServedModel>();
  private readonly loading = new Map<string, Promise<ServedModel>>();
  private readonly routings = new Map<string, ModelRouting>();
  private manifest: ModelManifest;
  private pool: InferencePool | undefined;
  private scheduler: BatchScheduler | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  /** When each draining version's queue was last looked at. */
  private readonly drainChecks = new Map<string, number>();
  private queueProbe: QueueProbe | undefined;

  constructor(
    manifest: ModelManifest,
    private readonly options: ModelSetOptions,
  ) {
    this.manifest = manifest;
  }

  /**
   * The versions to load at start: the stored routing's held versions of each served model (the
   * manifest's, when never changed). A default version that fails its checks stops the start; any
   * other is reported refused and skipped.
   */
  async initial(): Promise<ServedModel[]> {
    const out: ServedModel[] = [];
    for (const name of this.options.names) {
      const routing = await ensureRouting(this.options.redis, this.options.keys, this.manifest, name);
      if (!routing) continue;
      this.routings.set(name, routing);
      for (const version of versionsToLoad(routing)) {
        const entry = this.entryOf(name, version);
        const isDefault = version === routing.default_version;
        try {
          if (!entry) throw new VersionRefused(`model ${modelRef(name, version)} is not in the manifest`);
          const served = await verifyVersion(entry, this.options.modelsDir);
          this.checkBudget(served, out);
          out.push(served);
          this.held.set(served.pool.name, served);
        } catch (err) {
          if (isDefault || !(err instanceof VersionRefused)) throw err;
          this.options.logger.warn({ model: name, version, err: err.message }, 'model version refused');
        }
      }
    }
    return out;
  }

  /** Hands over the pool and scheduler built from `initial()`, reports what is held and starts releasing drained versions. */
  async attach(pool: InferencePool, scheduler: BatchScheduler): Promise<void> {
    this.pool = pool;
    this.scheduler = scheduler;
    for (const served of this.held.values()) await this.report(served.entry, { state: 'ready', at: Date.now() });
    this.sweeper = setInterval(() => this.sweep(), 1_000);
    this.sweeper.unref();
  }

  /** Lets draining versions go once the model's queue holds no job for them (the consumers' queues exist by then). */
  probeQueues(probe: QueueProbe): void {
    this.queueProbe = probe;
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
  }

  /** Every version held now. */
  all(): ServedModel[] {
    return [...this.held.values()];
  }

  /** The routing this worker last read for a model. */
  routing(name: string): ModelRouting | undefined {
    return this.routings.get(name);
  }

  /** A held version, if it is. */
  get(name: string, version: string): ServedModel | undefined {
    return this.held.get(modelRef(name, version));
  }

  /**
   * The version a job pinned, loading it first if the routing holds it and this worker does not
   * yet (a job can arrive a moment before the routing change that loads its version). A version
   * the routing does not hold throws `VersionRefused`: the job cannot run anywhere.
   */
  async ensure(name: string, version: string): Promise<ServedModel> {
    const held = this.get(name, version);
    if (held) return held;
    const pending = this.loading.get(modelRef(name, version));
    if (pending) return pending;
    await this.refresh(name);
    const routing = this.routings.get(name);
    if (!routing || !heldVersions(routing).includes(version)) {
      throw new VersionRefused(`version ${version} of model ${name} is not loaded`);
    }
    return this.load(name, version);
  }

  /** Reads a model's routing again and loads what it adds (after a change was published). */
  async reconcile(name: string): Promise<void> {
    if (!this.options.names.includes(name)) return;
    await this.refresh(name);
    const routing = this.routings.get(name);
    if (!routing) return;
    await Promise.all(
      versionsToLoad(routing).map((v) =>
        this.get(name, v)
          ? // Held already (it changed from live to shadow, or its weight did): confirm it to the admin route.
            this.report({ name, version: v }, { state: 'ready', at: Date.now() })
          : this.load(name, v).catch(() => undefined),
      ),
    );
    this.sweep();
  }

  private async refresh(name: string): Promise<void> {
    const stored = (await readRoutings(this.options.redis, this.options.keys)).get(name);
    // A default version added to the manifest since start: read the manifest again first.
    if (stored) this.entryOf(name, stored.default_version);
    const routing = stored && effectiveRouting(stored, this.manifest, name);
    if (routing) this.routings.set(name, routing);
  }

  private entryOf(name: string, version: string): ModelEntry | undefined {
    const find = () => manifestVersions(this.manifest, name).find((m) => m.version === version);
    let entry = find();
    if (!entry) {
      // A version added to the manifest after start: read it again.
      try {
        this.manifest = loadManifest(this.options.modelsDir);
        entry = find();
      } catch (err) {
        this.options.logger.warn({ err: (err as Error).message }, 'model manifest not read again');
      }
    }
    return entry;
  }

  private checkBudget(candidate: ServedModel, others: Iterable<ServedModel>): void {
    const budget = this.options.memoryBudgetMb;
    if (budget <= 0) return;
    let bytes = candidate.bytes;
    for (const served of others) if (served.pool.name !== candidate.pool.name) bytes += served.bytes;
    const estimateMb = (bytes * this.options.sessionsPerVersion) / (1024 * 1024);
    if (estimateMb > budget) {
      throw new VersionRefused(
        `model ${candidate.pool.name} would bring this worker's model memory to about ${Math.ceil(estimateMb)} MiB ` +
          `(${this.options.sessionsPerVersion} sessions per version), past its budget of ${budget} MiB ` +
          '(QUERN_WORKER_MODEL_MEMORY_MB)',
      );
    }
  }

  private load(name: string, version: string): Promise<ServedModel> {
    const ref = modelRef(name, version);
    const existing = this.loading.get(ref);
    if (existing) return existing;
    const loading = (async () => {
      const pool = this.pool;
      const scheduler = this.scheduler;
      if (!pool || !scheduler) throw new Error('the model set is not attached to a pool yet');
      const entry = this.entryOf(name, version);
      try {
        if (!entry) throw new VersionRefused(`model ${ref} is not in the manifest`);
        const served = await verifyVersion(entry, this.options.modelsDir);
        this.checkBudget(served, this.held.values());
        try {
          await pool.load(served.pool);
        } catch (err) {
          throw new VersionRefused(`model ${ref}: ${(err as Error).message}`);
        }
        scheduler.addModel({
          name: ref,
          features: served.pool.features,
          outputSize: served.pool.outputSize,
          maxBatchSize: entry.batching.max_batch_size,
          maxDelayMs: entry.batching.max_delay_ms,
        });
        this.held.set(ref, served);
        this.options.logger.info({ model: name, version }, 'model version loaded');
        await this.report({ name, version }, { state: 'ready', at: Date.now() });
        return served;
      } catch (err) {
        const reason = (err as Error).message;
        this.options.logger.warn({ model: name, version, err: reason }, 'model version refused');
        await this.report({ name, version }, { state: 'refused', reason, at: Date.now() });
        throw err;
      }
    })().finally(() => this.loading.delete(ref));
    this.loading.set(ref, loading);
    return loading;
  }

  /**
   * Releases held versions the routing dropped (or whose drain ended) once none of their rows is
   * pending; a draining version goes sooner, once the model's queue holds no job for it (checked
   * at most every few seconds, from a grace period after the unload on).
   */
  private sweep(): void {
    const pool = this.pool;
    const scheduler = this.scheduler;
    if (!pool || !scheduler) return;
    const now = Date.now();
    for (const [ref, served] of this.held) {
      const { name, version } = served.entry;
      const routing = this.routings.get(name);
      const drain = routing?.versions[version];
      if (routing && heldVersions(routing, now).includes(version)) {
        if (drain?.state === 'draining') this.checkDrained(ref, drain.since ?? now, now);
        continue;
      }
      if (scheduler.modelBusy(ref)) continue;
      this.release(ref);
    }
  }

  private checkDrained(ref: string, since: number, now: number): void {
    const queued = this.queueProbe;
    const last = this.drainChecks.get(ref) ?? 0;
    if (!queued || now < since + DRAIN_GRACE_MS || now < last + DRAIN_CHECK_MS) return;
    this.drainChecks.set(ref, now);
    const served = this.held.get(ref);
    if (!served) return;
    queued(served.entry.name, served.entry.version).then(
      (any) => {
        if (any || this.held.get(ref) !== served || this.scheduler?.modelBusy(ref)) return;
        this.release(ref);
        // No worker has a job of it left: it is unloaded for everyone (the others release it on the change).
        void this.dropDrained(served.entry.name, served.entry.version);
      },
      (err: Error) => this.options.logger.warn({ model: ref, err: err.message }, 'drain check failed'),
    );
  }

  private async dropDrained(name: string, version: string): Promise<void> {
    try {
      const stored = (await readRoutings(this.options.redis, this.options.keys)).get(name);
      if (stored?.versions[version]?.state !== 'draining') return;
      const versions = { ...stored.versions };
      delete versions[version];
      // A write that lost to another change is dropped: the next check tries again.
      const next = await writeRouting(this.options.redis, this.options.keys, name, { ...stored, versions });
      if (next) this.routings.set(name, next);
    } catch (err) {
      this.options.logger.warn({ model: name, version, err: (err as Error).message }, 'drained version not dropped');
    }
  }

  private release(ref: string): void {
    const served = this.held.get(ref);
    if (!served) return;
    const { name, version } = served.entry;
    this.held.delete(ref);
    this.drainChecks.delete(ref);
    this.scheduler?.removeModel(ref);
    void this.pool?.unload(ref);
    void this.options.redis
      .hdel(this.options.keys.modelLoads(name), `${this.options.workerId}|${version}`)
      .catch(() => undefined);
    this.options.logger.info({ model: name, version }, 'model version unloaded');
  }

  private async report(
    model: Pick<ModelEntry, 'name' | 'version'>,
    report: Parameters<typeof reportVersionLoad>[4],
  ): Promise<void> {
    await reportVersionLoad(this.options.redis, this.options.keys, this.options.workerId, model, report).catch(
      (err: Error) => this.options.logger.warn({ err: err.message }, 'model load not reported'),
    );
  }
}
