import { defineConfig } from 'vitest/config';

/** `pnpm test:chaos`: the fault-injection suite (processes, Redis restarts, kills), one file at a time. */
export default defineConfig({
  test: {
    include: ['tests/chaos/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
