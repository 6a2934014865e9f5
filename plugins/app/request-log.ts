import fp from 'fastify-plugin'
import { redactUrl } from '../../services/observe/redact.ts'
import { meterResponse } from './response-meter.ts'

/** pino's level values: a line is written when its level's value is at least the logger's. */
const LEVEL_VALUES = new Map([['trace', 10], ['debug', 20], ['info', 30], ['warn', 40], ['error', 50], ['fatal', 60], ['silent', Infinity]])

/**
 * One log line per request, written when the response is over (complete or
 * aborted), with the redacted URL, status, bytes sent and duration. Fastify's
 * own request logging is off (server.ts): it would log the URL with its credentials.
 */
export default fp(async function requestLogPlugin (fastify) {
  fastify.addHook('onRequest', async function logWhenDone (request, reply) {
    const route = request.routeOptions.url ?? 'unmatched'
    meterResponse(request, reply, ({ bytes, durationMs, aborted, status }) => {
      // A 503 from /health while images download is expected, not an error.
      const level = status >= 500 && route !== '/health' ? 'error' : 'info'
      // Redacting the URL is work for a line nobody reads when the level is off (every Range request comes here).
      if ((LEVEL_VALUES.get(request.log.level) ?? 0) > LEVEL_VALUES.get(level)!) return
      request.log[level]({
        method: request.method,
        url: redactUrl(request.url),
        route,
        status,
        bytes,
        durationMs: Math.round(durationMs * 10) / 10,
        ...(aborted ? { aborted: true } : {})
      }, 'request')
    })
  })
}, { name: 'request-log', fastify: '5.x' })
