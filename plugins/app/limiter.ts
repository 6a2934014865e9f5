import fp from 'fastify-plugin'
import { Gauge } from 'prom-client'
import { ClientGone } from '../../services/errors.ts'
import { ConcurrencyLimiter } from '../../services/http/limiter.ts'
import { METRIC_PREFIX } from '../../services/observe/metrics.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route holds a concurrency slot until its response is sent or the client is gone. */
    limited?: boolean
  }
}

export default fp(async function limiterPlugin (fastify) {
  const { maxConcurrentRequests, requestQueueTimeoutSeconds } = fastify.config
  const limiter = new ConcurrencyLimiter(maxConcurrentRequests, requestQueueTimeoutSeconds * 1000)
  // Read when scraped; with worker processes the cluster's values are the sum of theirs.
  const gauges = [
    ['active', 'Image requests holding one of the MAX_CONCURRENT_REQUESTS slots', () => limiter.active],
    ['queued', 'Image requests waiting for a slot (they get 503 after REQUEST_QUEUE_TIMEOUT)', () => limiter.queued]
  ] as const
  for (const [which, help, read] of gauges) {
    void new Gauge({ name: `${METRIC_PREFIX}limited_requests_${which}`, help, registers: [fastify.metricsRegistry], aggregator: 'sum', collect () { this.set(read()) } })
  }

  fastify.addHook('onRequest', async function acquireSlot (request, reply) {
    if (request.routeOptions.config.limited !== true || request.method === 'OPTIONS') return
    const clientGone = new AbortController()
    const onClose = (): void => clientGone.abort(new ClientGone())
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
}, { name: 'limiter', fastify: '5.x', dependencies: ['config', 'metrics'] })
