import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ModelEntry, type ModelManifest, outputSize } from '@quern/shared';
import type { PoolModel } from './inference-pool';

/** A model this worker serves: its manifest entry and where its file is. */
export interface ServedModel {
  entry: ModelEntry;
  pool: PoolModel;
}

/**
 * Picks the models this worker serves (all, or those named) and checks each file against the
 * manifest's SHA-256, so a worker never serves weights other than the ones the version names.
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
  return Promise.all(
    entries.map(async (entry) => {
      const path = join(modelsDir, entry.file);
      let bytes: Buffer;
      try {
        bytes = await readFile(path);
      } catch (err) {
        throw new Error(`model ${entry.name}: cannot read ${path}: ${(err as Error).message}`);
      }
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      if (sha256 !== entry.sha256) {
        throw new Error(`model ${entry.name}: ${path} has SHA-256 ${sha256}, the manifest says ${entry.sha256}`);
      }
      return {
        entry,
        pool: {
          name: entry.name,
          path,
          inputName: entry.input.name,
          outputName: entry.output.name,
          features: entry.input.features,
          outputSize: outputSize(entry),
        },
      };
    }),
  );
}
