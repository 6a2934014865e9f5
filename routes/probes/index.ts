import type { FastifyInstance } from 'fastify'
import { healthResponse, liveResponse } from '../schemas.ts'

export default async function probeRoutes (fastify: FastifyInstance) {
  const { readiness } = fastify

  fastify.get('/live', { schema: { response: liveResponse }, config: { plainHttp: true, neverShed: true } }, async function live () {
    return { status: 'alive' }
  })

  fastify.get('/health', { schema: { response: healthResponse }, config: { plainHttp: true, neverShed: true } }, async function health (_request, reply) {
    const degraded = readiness.degraded()
    const refused = readiness.refused()
    const details = { ...(degraded.length > 0 ? { degraded } : {}), ...(refused.length > 0 ? { refused } : {}) }
    if (readiness.allReady()) return { status: 'ready', ...details }
    return reply.code(503).header('retry-after', '5').send({ status: 'not ready', pending: readiness.pending(), ...details })
  })
}
