import { QuernClient } from '@quern/client';
import { TEST_API_KEY } from '@quern/devkit';
import type { Stack } from './stack';

/**
 * @quern/client calling the stack's app in this process, without a socket (as `stack.post`
 * does); tests/e2e/client.test.ts drives it over real HTTP.
 */
export function stackClient(stack: Pick<Stack, 'app'>, apiKey = TEST_API_KEY): QuernClient {
  return new QuernClient({ baseUrl: 'http://quern.test', apiKey, fetch: async (request) => stack.app.fetch(request) });
}
