import { type ModelEntry, type ModelManifest, QuernError } from '@quern/shared';

/** The models the API accepts, from the manifest; the API never loads the .onnx files. */
export class ModelRegistry {
  private readonly byName: Map<string, ModelEntry>;

  constructor(private readonly manifest: ModelManifest) {
    this.byName = new Map(manifest.models.map((m) => [m.name, m]));
  }

  get defaultName(): string {
    return this.manifest.default_model;
  }

  list(): ModelEntry[] {
    return [...this.byName.values()];
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  find(name: string): ModelEntry | undefined {
    return this.byName.get(name);
  }

  /** The named model, the default one when no name is given, or a 404 problem. */
  resolve(name: string | undefined): ModelEntry {
    const model = this.byName.get(name ?? this.manifest.default_model);
    if (!model) {
      throw new QuernError('model_not_found', `no model named "${name}"; GET /v1/models lists them`);
    }
    return model;
  }
}
