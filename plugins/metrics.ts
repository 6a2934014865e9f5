import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import { AggregatorRegistry, Gauge, Histogram, Registry } from 'prom-client'
import type { FastifyRequest } from 'fastify'
import { redactUrl } from '../services/redact.ts'
import { METRIC_PREFIX } from '../services/metrics.ts'

// fastify-metrics is CommonJS with an `exports.default`; Node's ESM import sees module.exports.
const fastifyMetrics = fastifyMetricsModule.default

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-app Prometheus registry; other plugins register their metrics here. */
    metricsRegistry: Registry
  }
}

/** Route pattern, never the raw URL: URLs carry tokens. */
function routeLabel (request: FastifyRequest): string {
  return request.routeOptions.url ?? 'unmatched'
}

/**
 * Prometheus metrics on /metrics plus one JSON log line per request. Both
 * measure bytes from the socket, so an aborted download counts what was sent.
 */
export interface MetricsOptions {
  /** The exposition to serve instead of this process's registry (a worker asks the primary for all processes'). */
  exposition?: () => Promise<string>
}

export default fp<MetricsOptions>(async function metricsPlugin (fastify, opts) {
  const registry = new Registry()
  fastify.decorate('metricsRegistry', registry)
  if (opts.exposition !== undefined) {
    // In a worker: constructing one installs prom-client's answer to the primary's requests.
    void new AggregatorRegistry()
    AggregatorRegistry.setRegistries([registry])
  }
  const exposition = opts.exposition ?? (() => registry.metrics())
  fastify.get('/metrics', { config: { plainHttp: true } }, async function metrics (_request, reply) {
    return await reply.type(registry.contentType).send(await exposition())
  })

  await fastify.register(fastifyMetrics, {
    // fastify-metrics replaces the handler; the config lets /metrics answer on the plain-HTTP port too.
    // /metrics is ours (below): with worker processes it shows every process, not the one that answers.
    endpoint: null,
    defaultMetrics: { enabled: true, register: registry, prefix: METRIC_PREFIX },
    routeMetrics: {
      enabled: { histogram: true, summary: false },
      registeredRoutesOnly: true,
      methodBlacklist: ['OPTIONS', 'TRACE', 'CONNECT'],
      routeBlacklist: ['/metrics'],
      overrides: {
        histogram: {
          name: `${METRIC_PREFIX}request_duration_seconds`,
          help: 'Request duration in seconds',
          buckets: [0.1, 1, 10, 50, 100, 300, 600],
          registers: [registry]
        },
        // fastify-metrics creates the summary even when it is disabled: keep it off the global registry.
        summary: { name: `${METRIC_PREFIX}request_summary_seconds`, registers: [registry] },
        labels: { route: 'route', method: 'method', status: 'status' }
      }
    }
  })

  const labelNames = ['route', 'method', 'status'] as const
  const responseSize = new Histogram({
    name: `${METRIC_PREFIX}response_size_bytes`,
    help: 'Response size in bytes',
    buckets: [100, 1e6, 5e8, 1e9, 1e10],
    labelNames,
    registers: [registry]
  })
  const inFlight = new Gauge({
    name: `${METRIC_PREFIX}in_flight_requests`,
    help: 'Requests being served',
    labelNames: ['route', 'method'] as const,
    registers: [registry]
  })

  fastify.addHook('onRequest', async function startTimer (request, reply) {
    const started = { at: process.hrtime.bigint(), bytesWritten: request.raw.socket?.bytesWritten ?? 0 }
    const route = routeLabel(request)
    const known = request.routeOptions.url !== undefined
    if (known) inFlight.inc({ route, method: request.method })
    // 'close' fires after the last byte and when the client leaves early; onResponse only on the former.
    reply.raw.once('close', function recordRequest () {
      const bytes = Math.max(0, (request.raw.socket?.bytesWritten ?? started.bytesWritten) - started.bytesWritten)
      const durationMs = Number(process.hrtime.bigint() - started.at) / 1e6
      if (known) {
        inFlight.dec({ route, method: request.method })
        if (route !== '/metrics') responseSize.observe({ route, method: request.method, status: String(reply.statusCode) }, bytes)
      }
      const aborted = !reply.raw.writableEnded
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
}, { name: 'metrics', fastify: '5.x' })
