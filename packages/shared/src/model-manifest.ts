import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';

/** A model name is used in queue names, Redis keys and URLs, so it is kept to a safe alphabet. */
export const ModelName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and dashes, at most 63 characters');

export const ModelEntry = z
  .object({
    name: ModelName,
    version: z.string().min(1).max(64),
    file: z
      .string()
      .min(1)
      .refine((f) => !isAbsolute(f) && !f.split(/[\\/]/).includes('..'), 'must be a path inside the models folder'),
    /** SHA-256 of the .onnx file; the worker refuses to serve a file that does not match. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    description: z.string().max(2000),
    input: z.object({
      name: z.string().min(1),
      features: z.number().int().min(1).max(65_536),
      feature_names: z.array(z.string()).optional(),
    }),
    output: z.object({
      name: z.string().min(1),
      /** Shape of one row's output, without the batch dimension: `[1]` gives a scalar prediction. */
      shape: z.array(z.number().int().min(1)).min(1),
    }),
    batching: z.object({
      max_batch_size: z.number().int().min(1).max(4096),
      max_delay_ms: z.number().int().min(0).max(10_000),
    }),
    /** BullMQ queues of this model (`QUERN_QUEUE_PARTITIONS` when absent); every version of a model should agree. */
    partitions: z.number().int().min(1).max(64).optional(),
  })
  .refine((m) => m.input.feature_names === undefined || m.input.feature_names.length === m.input.features, {
    message: 'feature_names must have one name per feature',
    path: ['input', 'feature_names'],
  });
export type ModelEntry = z.infer<typeof ModelEntry>;

export const ModelManifest = z
  .object({
    default_model: ModelName,
    /** One entry per model: the version each serves by default (until an operator routes otherwise). */
    models: z.array(ModelEntry).min(1),
    /**
     * Further versions of the models above, each with its own file and SHA-256: loaded side by
     * side with the default one, reachable by pinning (`name@version`), canary weights or shadow runs.
     */
    versions: z.array(ModelEntry).optional(),
  })
  .superRefine((m, ctx) => {
    const names = new Set<string>();
    for (const [i, entry] of m.models.entries()) {
      if (names.has(entry.name)) {
        ctx.addIssue({ code: 'custom', message: `duplicate model name ${entry.name}`, path: ['models', i, 'name'] });
      }
      names.add(entry.name);
    }
    const refs = new Set(m.models.map((e) => modelRef(e.name, e.version)));
    for (const [i, entry] of (m.versions ?? []).entries()) {
      if (!names.has(entry.name)) {
        ctx.addIssue({
          code: 'custom',
          message: `version of unknown model ${entry.name}`,
          path: ['versions', i, 'name'],
        });
      }
      const ref = modelRef(entry.name, entry.version);
      if (refs.has(ref)) {
        ctx.addIssue({ code: 'custom', message: `duplicate version ${ref}`, path: ['versions', i, 'version'] });
      }
      refs.add(ref);
    }
    if (!names.has(m.default_model)) {
      ctx.addIssue({
        code: 'custom',
        message: `default_model ${m.default_model} is not in models`,
        path: ['default_model'],
      });
    }
  });
export type ModelManifest = z.infer<typeof ModelManifest>;

/** How a request and a job name one version of a model: `cars-mpg@2.0.0`. */
export function modelRef(name: string, version: string): string {
  return `${name}@${version}`;
}

/** `name@version` split into its parts; a bare name pins no version. */
export function parseModelRef(ref: string): { name: string; version: string | undefined } {
  const at = ref.indexOf('@');
  return at < 0 ? { name: ref, version: undefined } : { name: ref.slice(0, at), version: ref.slice(at + 1) };
}

/** Every version of `name` the manifest holds, its default version first. */
export function manifestVersions(manifest: ModelManifest, name: string): ModelEntry[] {
  return [...manifest.models, ...(manifest.versions ?? [])].filter((m) => m.name === name);
}

/** Number of output values one input row produces. */
export function outputSize(model: ModelEntry): number {
  return model.output.shape.reduce((a, b) => a * b, 1);
}

/** Reads and validates `manifest.json` in `dir`; throws an error naming the bad field. */
export function loadManifest(dir: string): ModelManifest {
  const path = join(dir, 'manifest.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read model manifest ${path}: ${(err as Error).message}`);
  }
  const parsed = ModelManifest.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`invalid model manifest ${path}: ${issues}`);
  }
  return parsed.data;
}
