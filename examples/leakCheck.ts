/**
 * The testkit's leak check, in a test with @effect/vitest: every fd and handle the program opened must be
 * closed within a second of its end. Put this in a test file of your own and swap the pairs for your
 * connections.
 */
import { it } from "@effect/vitest"
import { Effect } from "effect"
import { Duplex } from "fullduplex"
import { withLeakCheck } from "fullduplex/testkit"

it.live("500 pairs, opened and closed, leave nothing behind", () =>
  withLeakCheck(
    Effect.forEach(Array.from({ length: 500 }), () => Effect.scoped(Duplex.pair())),
    { label: "500 pairs" }
  )
)
