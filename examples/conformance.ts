/**
 * The conformance suite, run on a transport with @effect/vitest. Put this in a test file of your own and
 * swap `Duplex.pair(…)` for your transport's connected pair (and its buffer bound).
 */
import { describe, it } from "@effect/vitest"
import { Duplex } from "fullduplex"
import { conformance } from "fullduplex/testkit"

describe("my transport", () => {
  for (const c of conformance("memory", Duplex.pair({ capacity: 4096 }), { bufferBound: 4096 })) {
    it.live(c.name, () => c.run)
  }
})
