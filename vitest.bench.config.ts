import { defineConfig } from 'vitest/config';

/**
 * `pnpm test:bench-smoke`: the benchmark's smoke run, alone on the machine (it rebuilds the
 * bundles and loads API, worker and Redis, which would slow the tests running beside it).
 */
export default defineConfig({
  test: {
    include: ['tests/bench/**/*.test.ts'],
    testTimeout: 240_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
