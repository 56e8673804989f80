import { createHash } from 'node:crypto';

/** Lower-case hex SHA-256, the format the manifest uses and the worker verifies before serving a model. */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
