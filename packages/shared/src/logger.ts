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
