/**
 * A server that stops without losing a request: `Shutdown.serve` announces "going away" on every
 * connection, the client stops sending, finishes what is in flight and half-closes, and the server
 * answers everything it read before it closes. Each request ends answered or `NotProcessed`, never in
 * between.
 *
 * Run it with `npx tsx examples/shutdown.ts`.
 */
import { Effect, Fiber } from "effect"
import { Shutdown, Tcp } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    const server = yield* Shutdown.serve({ port: 0, grace: "5 seconds", handle: (request) => Effect.succeed(request) })
    const client = yield* Shutdown.client(yield* Tcp.connect(server.address))

    // Requests back to back, until one is refused because the server is going away.
    const sender = yield* Effect.forkChild(
      Effect.gen(function* () {
        for (let answered = 0; ; answered++) {
          const result = yield* Effect.result(client.request(new TextEncoder().encode(`request ${answered}`)))
          if (result._tag === "Failure") return { answered, refusal: result.failure.message }
        }
      })
    )
    yield* Effect.sleep("100 millis")
    yield* server.shutdown // the notice goes out on every connection, and each one drains

    const { answered, refusal } = yield* Fiber.join(sender)
    const report = yield* client.close
    yield* Effect.log(`${answered} requests answered, then: ${refusal}`)
    yield* Effect.log(`client: ${report.sent} sent, ${report.answered} answered, ${report.notProcessed} not processed`)
  })
)

Effect.runPromise(program)
