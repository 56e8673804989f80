import { createRequire } from 'node:module';
import type { DestinationStream } from 'pino';
import type PinoPretty from 'pino-pretty';
import { asyncStdout } from './logger';

/** `LOG_FORMAT`: JSON lines, readable lines, or readable only when the output is a terminal. */
export type LogFormat = 'auto' | 'json' | 'pretty';

/** Whether lines written to an output that is (or is not) a terminal are to be readable ones. */
export function isPretty(format: LogFormat, isTerminal: boolean | undefined): boolean {
  return format === 'pretty' || (format === 'auto' && isTerminal === true);
}

/** Fields of the access line that the readable form folds into its message. */
const ACCESS_FIELDS = ['method', 'route', 'status', 'duration_ms'] as const;

/**
 * A function turning one JSON log line of a Quern process into one readable line (pino-pretty's
 * printer: time, level, message, then the remaining fields on the same line). The access line
 * reads `[api] POST /v1/predict 200 10.02 ms {"request_id":…}`. Lines that are not JSON pass
 * through unchanged. pino-pretty is loaded only here, so a process logging JSON never loads it.
 */
export function readableLogLines(colour: boolean): (line: string) => string {
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  const prettify = prettyFactory({
    colorize: colour,
    singleLine: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
  });
  return (line) => {
    if (!line.startsWith('{')) return line;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return line;
    }
    const service = typeof entry.service === 'string' ? `[${entry.service}] ` : '';
    delete entry.service;
    if (entry.msg === 'request' && typeof entry.status === 'number') {
      entry.msg = `${entry.method} ${entry.route} ${entry.status} ${entry.duration_ms} ms`;
      for (const field of ACCESS_FIELDS) delete entry[field];
    }
    entry.msg = `${service}${typeof entry.msg === 'string' ? entry.msg : ''}`;
    return prettify(entry).replace(/\n$/, '');
  };
}

/**
 * Where a service writes its log lines: standard output, asynchronously, as JSON lines, or as
 * readable lines when `format` asks for them (`auto`: when standard output is a terminal; a
 * person is reading, so the lines are written as they come).
 */
export function logDestination(format: LogFormat): DestinationStream {
  if (!isPretty(format, process.stdout.isTTY)) return asyncStdout();
  const readable = readableLogLines(process.stdout.hasColors?.() ?? false);
  return { write: (line: string) => void process.stdout.write(`${readable(line.replace(/\n$/, ''))}\n`) };
}

/**
 * The fatal line of a server that cannot listen. An address in use names the variable that moves
 * the server to another port, the fix a person at a terminal needs.
 */
export function listenFailure(err: NodeJS.ErrnoException, variable: string, port: number): [object, string] {
  if (err.code === 'EADDRINUSE') {
    return [{ port, variable }, `port ${port} is already in use: set ${variable} to a free port (${variable}=…)`];
  }
  return [{ err: err.message, port }, 'cannot listen'];
}
