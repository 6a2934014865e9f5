import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import { errorBody } from './errors.ts'

/** Probes and metrics must answer even when the process is overloaded. */
const EXEMPT = new Set(['/live', '/health', '/metrics'])
const RETRY_AFTER_SECONDS = 10

export default fp(async function underPressurePlugin (fastify) {
  const { maxEventLoopDelayMs, maxHeapUsedBytes } = fastify.config.underPressure
  await fastify.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    retryAfter: RETRY_AFTER_SECONDS,
    sampleInterval: 500,
    pressureHandler (request, reply) {
      if (EXEMPT.has(request.routeOptions.url ?? '')) return undefined
      void reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS))
      // under-pressure sends a non-null return value as the body (its typings say void).
      return errorBody('UNDER_PRESSURE', 'service under pressure, try again later') as unknown as undefined
    }
  })
}, { name: 'under-pressure', fastify: '5.x', dependencies: ['config'] })
