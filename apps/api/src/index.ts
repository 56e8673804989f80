/** What other packages (tests, the bench) use of the API: the app factory and its services. */
export { createApp } from './app';
export type { AppEnv } from './env';
export { type ApiKeyRecord, KeyStore } from './services/key-store';
export { type Principal, SCOPES, type Scope } from './services/principal';
export { createServices, type Services } from './services/services';
