import fp from 'fastify-plugin'
import { ConcurrencyLimiter } from '../services/limiter.ts'

declare module 'fastify' {
  interface FastifyInstance {
    limiter: ConcurrencyLimiter
  }
  interface FastifyContextConfig {
    /** The route holds a concurrency slot until its response is sent or the client is gone. */
    limited?: boolean
  }
}

export default fp(async function limiterPlugin (fastify) {
  const { maxConcurrentRequests, requestQueueTimeoutSeconds } = fastify.config
  const limiter = new ConcurrencyLimiter(maxConcurrentRequests, requestQueueTimeoutSeconds * 1000)
  fastify.decorate('limiter', limiter)

  fastify.addHook('onRequest', async function acquireSlot (request, reply) {
    if (request.routeOptions.config.limited !== true || request.method === 'OPTIONS') return
    const clientGone = new AbortController()
    const onClose = (): void => clientGone.abort(new Error('client disconnected'))
    reply.raw.once('close', onClose)
    const release = await limiter.acquire(clientGone.signal)
    reply.raw.off('close', onClose)
    if (reply.raw.destroyed || reply.raw.writableFinished) {
      release()
      return
    }
    // 'close' fires both after the last byte is flushed and when the client leaves early.
    reply.raw.once('close', release)
  })
}, { name: 'limiter', fastify: '5.x', dependencies: ['config'] })
