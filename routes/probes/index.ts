import type { FastifyInstance } from 'fastify'

export default async function probeRoutes (fastify: FastifyInstance) {
  const { readiness } = fastify

  fastify.get('/live', { config: { plainHttp: true } }, async function live () {
    return { status: 'alive' }
  })

  fastify.get('/health', { config: { plainHttp: true } }, async function health (request, reply) {
    const degraded = readiness.degraded()
    const details = degraded.length > 0 ? { degraded } : {}
    if (readiness.allReady()) return { status: 'ready', ...details }
    return reply.code(503).header('retry-after', '5').send({ status: 'not ready', pending: readiness.pending(), ...details })
  })
}
