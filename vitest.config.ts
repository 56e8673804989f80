import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: [
      'apps/*/src/**/*.test.ts',
      'packages/*/src/**/*.test.ts',
      'models/test/**/*.test.ts',
      'tests/**/*.test.ts',
    ],
    // Run on their own, one file at a time: vitest.chaos.config.ts and vitest.bench.config.ts.
    exclude: ['**/node_modules/**', 'tests/chaos/**', 'tests/bench/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
