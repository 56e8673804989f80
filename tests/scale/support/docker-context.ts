import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { DockerfileParser, type Instruction, ModifiableInstruction } from 'dockerfile-ast';

/**
 * What a `docker build` of this repository would see, without a Docker engine: the Dockerfile's
 * stages and the build context as `.dockerignore` filters it.
 */
export const DOCKERFILE = 'deployment/docker/Dockerfile';

interface IgnoreRule {
  negate: boolean;
  regex: RegExp;
  pattern: string;
}

/** `.dockerignore` patterns as Docker reads them (moby's patternmatcher): the last match wins. */
export class DockerIgnore {
  readonly rules: IgnoreRule[];

  constructor(text: string) {
    this.rules = text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0 && !l.startsWith('#'))
      .map((line) => {
        const negate = line.startsWith('!');
        const pattern = (negate ? line.slice(1) : line).trim().replace(/^\/+/, '').replace(/\/+$/, '');
        return { negate, pattern, regex: DockerIgnore.toRegex(pattern) };
      });
  }

  static load(root = REPO_ROOT): DockerIgnore {
    return new DockerIgnore(readFileSync(join(root, '.dockerignore'), 'utf8'));
  }

  private static toRegex(pattern: string): RegExp {
    let re = '';
    for (let i = 0; i < pattern.length; i++) {
      const ch = pattern[i] as string;
      if (ch === '*') {
        if (pattern[i + 1] === '*') {
          i++;
          if (pattern[i + 1] === '/') i++;
          re += i + 1 >= pattern.length ? '.*' : '(.*/)?';
        } else {
          re += '[^/]*';
        }
      } else if (ch === '?') {
        re += '[^/]';
      } else if ('.+()|^$[]{}\\'.includes(ch)) {
        re += `\\${ch}`;
      } else {
        re += ch;
      }
    }
    return new RegExp(`^${re}$`);
  }

  /** True when `path` (relative, `/`-separated) is left out of the build context. */
  excludes(path: string): boolean {
    const segments = path.split('/');
    const candidates = segments.map((_, i) => segments.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const rule of this.rules) {
      // A pattern matches the path or any folder it is in.
      if (candidates.some((c) => rule.regex.test(c))) excluded = !rule.negate;
    }
    return excluded;
  }

  /** Whether some exception (`!pattern`) may re-include a file under the excluded folder `dir`. */
  private mayReinclude(dir: string): boolean {
    return this.rules.some((r) => r.negate && r.pattern.startsWith(`${dir}/`));
  }

  /** Every file of the context, relative to `root`. */
  files(root = REPO_ROOT): string[] {
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
        const path = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory()) {
          if (this.excludes(path) && !this.mayReinclude(path)) continue;
          walk(path);
        } else if (entry.isFile() && !this.excludes(path)) {
          out.push(path);
        }
      }
    };
    walk('');
    return out.sort();
  }

  /** Copies the context into `dest` (what `COPY . .` gives the build stage). */
  copyContext(dest: string, root = REPO_ROOT): number {
    const files = this.files(root);
    for (const file of files) {
      mkdirSync(dirname(join(dest, file)), { recursive: true });
      copyFileSync(join(root, file), join(dest, file));
    }
    return files.length;
  }
}

export interface Stage {
  name: string;
  /** The image or earlier stage it starts from (ARGs of the global scope substituted). */
  from: string;
  instructions: Instruction[];
}

/** The Dockerfile's stages, in order, with their instructions. */
export function parseDockerfile(text = readFileSync(join(REPO_ROOT, DOCKERFILE), 'utf8')): {
  stages: Stage[];
  args: Record<string, string>;
} {
  const dockerfile = DockerfileParser.parse(text);
  const args: Record<string, string> = {};
  for (const arg of dockerfile.getInitialARGs()) {
    const property = arg.getProperty();
    if (property) args[property.getName()] = property.getValue() ?? '';
  }
  const stages: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const [image = '', as, name] = instruction.getArguments().map((a) => a.getValue());
      const from = image.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => args[a ?? b] ?? '');
      stages.push({ name: as?.toUpperCase() === 'AS' && name ? name : String(stages.length), from, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return { stages, args };
}

/** The chain of stages a target is built from, base first. */
export function stageChain(stages: readonly Stage[], target: string): Stage[] {
  const chain: Stage[] = [];
  let current = stages.find((s) => s.name === target);
  while (current) {
    chain.unshift(current);
    const parent: string = current.from;
    current = stages.find((s) => s.name === parent);
  }
  return chain;
}

/** Flags (`--from=build`, `--chown=…`) and arguments of an instruction. */
export function flagsAndArgs(instruction: Instruction): { flags: Record<string, string>; args: string[] } {
  const flags: Record<string, string> = {};
  // COPY, HEALTHCHECK, RUN, FROM… parse their flags apart from their arguments.
  if (instruction instanceof ModifiableInstruction) {
    for (const flag of instruction.getFlags()) flags[flag.getName()] = flag.getValue() ?? '';
  }
  const args: string[] = [];
  for (const arg of instruction.getArguments().map((a) => a.getValue())) {
    const flag = /^--([\w-]+)(?:=(.*))?$/.exec(arg);
    if (flag && args.length === 0) flags[flag[1] as string] = flag[2] ?? '';
    else args.push(arg);
  }
  return { flags, args };
}

/** The shell command of a `RUN` (its `--mount` and other flags removed, continuations joined). */
export function runCommand(instruction: Instruction): string {
  const content = instruction.getArgumentsContent() ?? '';
  return content
    .replace(/\\\r?\n/g, ' ')
    .replace(/^(\s*--[\w-]+=\S+)+\s*/, '')
    .trim();
}

/** An `ENV` instruction's variables. */
export function envOf(instruction: Instruction): Record<string, string> {
  const out: Record<string, string> = {};
  const { args } = flagsAndArgs(instruction);
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq > 0) out[arg.slice(0, eq)] = arg.slice(eq + 1).replace(/^"(.*)"$/, '$1');
  }
  return out;
}

/** The JSON-array form of a `CMD` or `HEALTHCHECK … CMD` instruction. */
export function execForm(instruction: Instruction): string[] {
  const content = (instruction.getArgumentsContent() ?? '').replace(/\\\r?\n/g, ' ');
  const json = content.slice(content.indexOf('['));
  return JSON.parse(json) as string[];
}
