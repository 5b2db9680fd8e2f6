import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end tests mount overlays and run containers as root: keep files apart, not racing.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
