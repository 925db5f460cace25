/**
 * fullduplex's testkit: fast-check arbitraries for payloads, chunkings, capacities and consumer pacing;
 * `assertDeadlockFree`, a progress watchdog for tests; `assertProperty`, property checks within a time
 * budget; `conformance`, the suite every `Duplex` implementation runs; `withLeakCheck`, which counts fds
 * and handles around a program. Needs `fast-check` 4 (an optional peer dependency). The defaults fit
 * vitest's default test timeout (5 s): a deadlock is reported with its diagnostic, not as a timeout.
 *
 * @module fullduplex/testkit
 * @since 0.1.0
 */
export * from "./testkit/arbitraries.js"
export * from "./testkit/assertDeadlockFree.js"
export * from "./testkit/collect.js"
export * from "./testkit/conformance.js"
export * from "./testkit/property.js"
export * from "./testkit/random.js"
export * from "./testkit/leaks.js"
