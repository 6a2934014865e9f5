import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import fastifyMetricsModule from 'fastify-metrics'
import { Gauge, Histogram, Registry } from 'prom-client'
import { answerRegistryRequests } from '../../services/process/worker.ts'
import { meterResponse } from '../app/response-meter.ts'
import cluster from 'node:cluster'
import { METRIC_PREFIX, processMemoryMetrics } from '../../services/observe/metrics.ts'

// fastify-metrics is CommonJS with an `exports.default`; Node's ESM import sees module.exports.
const fastifyMetrics = fastifyMetricsModule.default

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-app Prometheus registry; other plugins register their metrics here. */
    metricsRegistry: Registry
  }
  interface FastifyContextConfig {
    /**
     * The route's `handler` label: upstream's handler id where it has one (so its dashboards and
     * alerts keep working), or a function of the request for labels upstream takes from the path.
     * Default: the route pattern, never the raw URL (URLs carry tokens).
     */
    metricsHandler?: string | ((request: FastifyRequest) => string)
  }
}

/**
 * Prometheus metrics on /metrics: the process metrics of fastify-metrics, and
 * the HTTP families of the Go service (slok/go-http-metrics with the prefix
 * `assisted_image_service`), same names, types, labels and buckets.
 */
export interface MetricsOptions {
  /** The exposition to serve instead of this process's registry (a worker asks the primary for all processes'). */
  exposition?: () => Promise<string>
}

/** go-http-metrics' label names; `service` is always empty, as upstream never names one. */
const HTTP_LABELS = ['service', 'handler', 'method', 'code'] as const
const HTTP_DURATION_BUCKETS = [0.1, 1, 10, 50, 100, 300, 600]
const HTTP_SIZE_BUCKETS = [100, 1e6, 5e8, 1e9, 1e10]

function handlerOf (request: FastifyRequest): string | undefined {
  const label = request.routeOptions.config.metricsHandler
  if (typeof label === 'function') return label(request)
  return label ?? request.routeOptions.url
}

export default fp<MetricsOptions>(async function metricsPlugin (fastify, opts) {
  const registry = new Registry()
  fastify.decorate('metricsRegistry', registry)
  // In a worker: the primary aggregates this registry with the others and its own.
  if (opts.exposition !== undefined) answerRegistryRequests(registry)
  const exposition = opts.exposition ?? (() => registry.metrics())
  fastify.get('/metrics', { config: { plainHttp: true, neverShed: true } }, async function metrics (_request, reply) {
    return await reply.type(registry.contentType).send(await exposition())
  })

  // Route metrics are ours (below): fastify-metrics times to onResponse, which an aborted download never reaches.
  await fastify.register(fastifyMetrics, {
    endpoint: null,
    defaultMetrics: { enabled: true, register: registry, prefix: METRIC_PREFIX },
    routeMetrics: { enabled: false }
  })
  // prom-client's sums of the labelled nodejs_active_* gauges: gauges named _total, which Prometheus's lint rejects.
  for (const sum of ['active_handles_total', 'active_requests_total', 'active_resources_total']) registry.removeSingleMetric(`${METRIC_PREFIX}nodejs_${sum}`)
  processMemoryMetrics(registry, cluster.isWorker ? `worker-${cluster.worker!.id}` : 'main')

  const httpHistogram = (name: string, help: string, buckets: number[]) =>
    new Histogram({ name: `${METRIC_PREFIX}${name}`, help, buckets, labelNames: HTTP_LABELS, registers: [registry] })
  const duration = httpHistogram('http_request_duration_seconds', 'The latency of the HTTP requests.', HTTP_DURATION_BUCKETS)
  const responseSize = httpHistogram('http_response_size_bytes', 'The size of the HTTP responses.', HTTP_SIZE_BUCKETS)
  const inFlight = new Gauge({
    name: `${METRIC_PREFIX}http_requests_inflight`,
    help: 'The number of inflight requests being handled at the same time.',
    labelNames: ['service', 'handler'] as const,
    registers: [registry]
  })

  fastify.addHook('onRequest', async function countRequest (request, reply) {
    const url = request.routeOptions.url
    // Unknown routes and OPTIONS preflights are not counted, nor /metrics (as upstream).
    if (url === undefined || url === '/metrics' || request.method === 'OPTIONS') return
    const handler = handlerOf(request) ?? url
    inFlight.inc({ service: '', handler })
    meterResponse(request, reply, ({ bytes, durationMs, status }) => {
      inFlight.dec({ service: '', handler })
      const labels = { service: '', handler, method: request.method, code: String(status) }
      duration.observe(labels, durationMs / 1000)
      responseSize.observe(labels, bytes)
    })
  })
}, { name: 'metrics', fastify: '5.x' })
