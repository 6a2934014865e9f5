import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import { AggregatorRegistry, Gauge, Histogram, Registry } from 'prom-client'
import { meterResponse } from './response-meter.ts'
import { METRIC_PREFIX } from '../services/metrics.ts'

// fastify-metrics is CommonJS with an `exports.default`; Node's ESM import sees module.exports.
const fastifyMetrics = fastifyMetricsModule.default

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-app Prometheus registry; other plugins register their metrics here. */
    metricsRegistry: Registry
  }
}

/**
 * Prometheus metrics on /metrics. Response sizes are measured on the socket, so
 * an aborted download counts what was sent.
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

  fastify.addHook('onRequest', async function countRequest (request, reply) {
    // The route pattern, never the raw URL: URLs carry tokens. Unknown routes are not counted.
    const route = request.routeOptions.url
    if (route === undefined) return
    inFlight.inc({ route, method: request.method })
    meterResponse(request, reply, ({ bytes, status }) => {
      inFlight.dec({ route, method: request.method })
      if (route !== '/metrics') responseSize.observe({ route, method: request.method, status: String(status) }, bytes)
    })
  })
}, { name: 'metrics', fastify: '5.x' })
