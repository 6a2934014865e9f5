import fp from 'fastify-plugin'
import underPressure, { TYPE_EVENT_LOOP_DELAY } from '@fastify/under-pressure'
import { errorBody } from '../app/errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route serves an image: it is never shed for event-loop delay (MAX_EVENT_LOOP_DELAY_MS). */
    imageRoute?: boolean
    /** Probes and metrics: never shed, they must answer even when the process is overloaded. */
    neverShed?: boolean
  }
}

const RETRY_AFTER_SECONDS = 10

/**
 * MAX_HEAP_USED_BYTES sheds every request but the probes. MAX_EVENT_LOOP_DELAY_MS
 * sheds only what is not an image: a BMC that gets a 503 in the middle of a
 * virtual-media mount (thousands of Range requests) usually fails the boot,
 * while a late answer only slows it. Image requests queue in the limiter
 * (MAX_CONCURRENT_REQUESTS, REQUEST_QUEUE_TIMEOUT) instead.
 */
export default fp(async function underPressurePlugin (fastify) {
  const { maxEventLoopDelayMs, maxHeapUsedBytes } = fastify.config.underPressure
  // under-pressure reports the first threshold crossed: a delayed loop would hide a heap over its limit.
  const heapOver = (): boolean => maxHeapUsedBytes > 0 && fastify.memoryUsage().heapUsed > maxHeapUsedBytes
  await fastify.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    retryAfter: RETRY_AFTER_SECONDS,
    sampleInterval: 500,
    pressureHandler (request, reply, type) {
      if (request.routeOptions.config.neverShed === true) return undefined
      if (type === TYPE_EVENT_LOOP_DELAY && request.routeOptions.config.imageRoute === true && !heapOver()) return undefined
      void reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS))
      // under-pressure sends a non-null return value as the body (its typings say void).
      return errorBody('UNDER_PRESSURE', 'service under pressure, try again later') as unknown as undefined
    }
  })
}, { name: 'under-pressure', fastify: '5.x', dependencies: ['config'] })
