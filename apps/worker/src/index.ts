/** What other packages (tests, the bench) use of the worker: the runtime and its parts. */
export { BatchScheduler } from './batch-scheduler';
export { InferencePool } from './inference-pool';
export { resolveServedModels } from './models';
export { postWebhook } from './webhook-http';
export { WorkerRuntime } from './worker-runtime';
