import fp from 'fastify-plugin'
import { redactUrl } from '../services/redact.ts'
import { meterResponse } from './response-meter.ts'

/**
 * One log line per request, written when the response is over (complete or
 * aborted), with the redacted URL, status, bytes sent and duration. Fastify's
 * own request logging is off (server.ts): it would log the URL with its credentials.
 */
export default fp(async function requestLogPlugin (fastify) {
  fastify.addHook('onRequest', async function logWhenDone (request, reply) {
    const route = request.routeOptions.url ?? 'unmatched'
    meterResponse(request, reply, ({ bytes, durationMs, aborted }) => {
      // A 503 from /health while images download is expected, not an error.
      request.log[reply.statusCode >= 500 && route !== '/health' ? 'error' : 'info']({
        method: request.method,
        url: redactUrl(request.url),
        route,
        status: reply.statusCode,
        bytes,
        durationMs: Math.round(durationMs * 10) / 10,
        ...(aborted ? { aborted: true } : {})
      }, 'request')
    })
  })
}, { name: 'request-log', fastify: '5.x' })
