import fp from 'fastify-plugin'
import type { IncomingMessage } from 'node:http'
import { errorBody } from './errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served on the extra plain-HTTP port of a TLS setup (PXE loaders cannot do TLS). */
    plainHttp?: boolean
  }
}

const restricted = new WeakSet<IncomingMessage>()

/** Marks a request that arrived on the restricted plain-HTTP port. */
export function markRestrictedPlainHttp (request: IncomingMessage): void {
  restricted.add(request)
}

/**
 * In a TLS + HTTP_LISTEN_PORT setup only PXE-facing routes and probes answer
 * on the plain-HTTP port; everything else looks absent there.
 */
export default fp(async function plainHttpPlugin (fastify) {
  fastify.addHook('onRequest', async function restrictPlainHttp (request, reply) {
    if (restricted.has(request.raw) && request.routeOptions.config.plainHttp !== true) {
      return reply.code(404).send(errorBody('NOT_FOUND', 'not served on the plain-HTTP port'))
    }
  })
}, { name: 'plain-http', fastify: '5.x' })
