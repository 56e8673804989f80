import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/**
 * Paths pino blanks out wherever they appear in a log object. Keys, tokens and secrets must never
 * reach a log line, including error logs that dump a request or a job.
 */
export const REDACT_PATHS = [
  'authorization',
  'Authorization',
  '*.authorization',
  '*.Authorization',
  'headers["x-api-key"]',
  '*.headers["x-api-key"]',
  '*.headers.authorization',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'api_key',
  '*.api_key',
  'token',
  '*.token',
  'access_token',
  '*.access_token',
  'secret',
  '*.secret',
  'password',
  '*.password',
];

/**
 * Standard output for a service's log lines, written asynchronously: a line is handed to the
 * kernel after the response that caused it, lines written while one write is in flight go out
 * together, and pino flushes what is left when the process exits. (pino's default writes each
 * line synchronously, a syscall on the request path.)
 */
export function asyncStdout(): DestinationStream {
  return pino.destination({ dest: 1, sync: false });
}

/** A JSON logger for one service; `destination` lets tests capture the lines. */
export function createLogger(
  service: 'api' | 'worker' | 'cli' | 'devkit',
  level: string,
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      level,
      base: { service },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/**
 * A child for lines whose fields are fixed and known to hold no secret (the one access line per
 * request: method, route, status, duration, principal id, key prefix). Redaction walks every
 * field of every line and costs several times the line itself; these lines skip it. Never pass
 * it anything else.
 */
export function accessLogger(logger: Logger): Logger {
  // An empty list would inherit the parent's paths: a path that never occurs turns redaction off.
  return logger.child({}, { redact: { paths: ['__no_secret_fields_in_access_lines__'] } });
}
