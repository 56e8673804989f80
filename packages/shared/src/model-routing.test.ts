import { describe, expect, it } from 'vitest';
import { ModelManifest } from './model-manifest';
import {
  effectiveRouting,
  heldVersions,
  initialRouting,
  type ModelRouting,
  pickVersion,
  pinnableVersions,
  shadowVersions,
} from './model-routing';

const entry = (version: string, name = 'cars-mpg') => ({
  name,
  version,
  file: `${name}-${version}.onnx`,
  sha256: 'a'.repeat(64),
  description: '',
  input: { name: 'features', features: 6 },
  output: { name: 'mpg', shape: [1] },
  batching: { max_batch_size: 8, max_delay_ms: 0 },
});

const manifest = ModelManifest.parse({
  default_model: 'cars-mpg',
  models: [entry('1.0.0')],
  versions: [entry('2.0.0'), entry('3.0.0')],
});

describe('the manifest’s versions', () => {
  it('refuses a version of an unknown model and a version listed twice', () => {
    const bad = ModelManifest.safeParse({
      default_model: 'cars-mpg',
      models: [entry('1.0.0')],
      versions: [entry('1.0.0'), entry('1.0.0', 'other')],
    });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues.map((i) => i.message)).toEqual([
      'duplicate version cars-mpg@1.0.0',
      'version of unknown model other',
    ]);
  });
});

describe('model routing', () => {
  it('starts with every manifest version live and the models entry the default', () => {
    const routing = initialRouting(manifest, 'cars-mpg') as ModelRouting;
    expect(routing.default_version).toBe('1.0.0');
    expect(pinnableVersions(routing)).toEqual(['1.0.0', '2.0.0', '3.0.0']);
    expect(pickVersion(routing, 'cars-mpg', 'key_a')).toBe('1.0.0');
    expect(initialRouting(manifest, 'nope')).toBeUndefined();
  });

  it('holds a draining version until its drain ends; pins and shadows only what they may', () => {
    const routing: ModelRouting = {
      rev: 3,
      default_version: '2.0.0',
      versions: {
        '1.0.0': { state: 'draining', weight: 0, drain_until: 1_000 },
        '2.0.0': { state: 'live', weight: 0 },
        '3.0.0': { state: 'shadow', weight: 0, sample: 0.25 },
      },
    };
    expect(heldVersions(routing, 999)).toEqual(['1.0.0', '2.0.0', '3.0.0']);
    expect(heldVersions(routing, 1_000)).toEqual(['2.0.0', '3.0.0']);
    expect(pinnableVersions(routing)).toEqual(['2.0.0']);
    expect(shadowVersions(routing)).toEqual([{ version: '3.0.0', sample: 0.25 }]);
    // A shadow version never takes unpinned traffic, whatever its weight says.
    const weighted = {
      ...routing,
      versions: { ...routing.versions, '3.0.0': { state: 'shadow' as const, weight: 50 } },
    };
    expect(pickVersion(weighted, 'cars-mpg', 'key_a')).toBe('2.0.0');
  });

  it('splits callers by weight, the same caller always to the same version, per model', () => {
    const routing: ModelRouting = {
      rev: 1,
      default_version: '1.0.0',
      versions: {
        '1.0.0': { state: 'live', weight: 0 },
        '2.0.0': { state: 'live', weight: 30 },
        '3.0.0': { state: 'live', weight: 20 },
      },
    };
    const keys = Array.from({ length: 5000 }, (_, i) => `key_${i}`);
    const count = (model: string) => {
      const n: Record<string, number> = {};
      for (const k of keys) {
        const v = pickVersion(routing, model, k);
        n[v] = (n[v] ?? 0) + 1;
      }
      return n;
    };
    const shares = count('cars-mpg');
    expect((shares['2.0.0'] ?? 0) / keys.length).toBeCloseTo(0.3, 1);
    expect((shares['3.0.0'] ?? 0) / keys.length).toBeCloseTo(0.2, 1);
    expect((shares['1.0.0'] ?? 0) / keys.length).toBeCloseTo(0.5, 1);
    // Sticky: the pick depends on the key and the weights only (another process, another copy, same answer).
    const copy = structuredClone(routing);
    expect(keys.every((k) => pickVersion(routing, 'cars-mpg', k) === pickVersion(copy, 'cars-mpg', k))).toBe(true);
    // Another model puts the same key in another bucket: one key is not every model's canary.
    const differ = keys.filter((k) => pickVersion(routing, 'cars-mpg', k) !== pickVersion(routing, 'other', k));
    expect(differ.length).toBeGreaterThan(keys.length / 4);
  });

  it('falls back to the manifest when the stored default version left it (an upgrade replaced the file)', () => {
    const stored: ModelRouting = {
      rev: 7,
      default_version: '0.9.0',
      versions: { '0.9.0': { state: 'live', weight: 0 } },
    };
    const effective = effectiveRouting(stored, manifest, 'cars-mpg') as ModelRouting;
    expect(effective.default_version).toBe('1.0.0');
    expect(effective.rev).toBe(7);
    const current: ModelRouting = {
      ...stored,
      default_version: '2.0.0',
      versions: { '2.0.0': { state: 'live', weight: 0 } },
    };
    expect(effectiveRouting(current, manifest, 'cars-mpg')).toBe(current);
  });
});
