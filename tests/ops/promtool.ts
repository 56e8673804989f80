import { execFile } from 'node:child_process';
import { REPO_ROOT } from '@quern/devkit';

export interface ToolResult {
  code: number;
  output: string;
}

/**
 * Runs a Prometheus binary (`promtool`, `prometheus`) from PATH. A missing binary is an error
 * naming the package to install, never a skip: CI installs it (.ci/run).
 */
export function runTool(bin: string, args: string[], cwd = REPO_ROOT, input?: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { cwd, timeout: 30_000 }, (error, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(
          new Error(
            `${bin} is not installed (not found on PATH). Install Debian's prometheus package ` +
              '(sudo apt-get install -y prometheus), which provides promtool and prometheus; .ci/run does this in CI.',
          ),
        );
        return;
      }
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, output });
    });
    // `promtool check metrics` reads the exposition from standard input.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/** Fails with the tool's output when it did not exit 0. */
export function expectSuccess(what: string, result: ToolResult): void {
  if (result.code !== 0) throw new Error(`${what} exited ${result.code}:\n${result.output}`);
}
