import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import type { ModelEntry, ModelManifest } from '@quern/shared';

const MODELS = join(REPO_ROOT, 'models');

export interface ModelVariant {
  /** Name of the new manifest entry. */
  name: string;
  /** Existing model whose file and spec it reuses. */
  from: string;
  batching?: Partial<ModelEntry['batching']>;
}

/**
 * A models folder for one test: the real manifest and files, plus variants of them with other
 * batching settings (a long max_delay_ms keeps a job in the batcher; max_batch_size 1 makes a
 * 100-row job take a while; a variant no worker serves keeps jobs queued).
 */
export function writeTestModels(
  variants: ModelVariant[],
  /** Models of the test's own, written into the folder by `write` (which returns the manifest entry). */
  extra: ((dir: string) => ModelEntry)[] = [],
): string {
  const dir = mkdtempSync(join(tmpdir(), 'quern-models-'));
  const manifest = JSON.parse(readFileSync(join(MODELS, 'manifest.json'), 'utf8')) as ModelManifest;
  for (const model of manifest.models) copyFileSync(join(MODELS, model.file), join(dir, model.file));
  for (const variant of variants) {
    const base = manifest.models.find((m) => m.name === variant.from);
    if (!base) throw new Error(`no model ${variant.from}`);
    manifest.models.push({ ...base, name: variant.name, batching: { ...base.batching, ...variant.batching } });
  }
  for (const write of extra) manifest.models.push(write(dir));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  return dir;
}
