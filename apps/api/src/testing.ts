import { OTHER_API_KEY, TEST_API_KEY } from '@quern/devkit';
import type { KeyStore } from './services/key-store';
import { SCOPES } from './services/principal';

/** Stores the two fixed test keys (premium, every scope) so tests can use them by value. */
export async function seedTestKeys(store: KeyStore): Promise<void> {
  await store.upsertKnownKey(TEST_API_KEY, { name: 'test', tier: 'premium', scopes: [...SCOPES] });
  await store.upsertKnownKey(OTHER_API_KEY, { name: 'other', tier: 'premium', scopes: [...SCOPES] });
}
