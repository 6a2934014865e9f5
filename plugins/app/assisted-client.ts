import fp from 'fastify-plugin'
import { Counter, Histogram } from 'prom-client'
import { AssistedClient } from '../../services/upstream/assisted-client.ts'
import { CachedInfraEnvSource } from '../../services/upstream/cached-source.ts'
import type { InfraEnvSource } from '../../services/upstream/infra-env-source.ts'
import { LocalInfraEnvSource } from '../../services/upstream/local-source.ts'
import { METRIC_PREFIX } from '../../services/observe/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-host content: assisted-service when ASSISTED_SERVICE_HOST is set, else INFRAENVS_DIR. */
    infraEnvSource: InfraEnvSource
  }
}

export default fp(async function assistedClientPlugin (fastify) {
  const { assistedService, infraEnvsDir, proxy, upstreamCacheTtlSeconds } = fastify.config
  const calls = new Counter({ name: `${METRIC_PREFIX}upstream_calls_total`, help: 'assisted-service calls by endpoint and status', labelNames: ['endpoint', 'status'] as const, registers: [fastify.metricsRegistry] })
  const hits = new Counter({ name: `${METRIC_PREFIX}upstream_cache_hits_total`, help: 'assisted-service answers served from the cache or a coalesced call', labelNames: ['endpoint'] as const, registers: [fastify.metricsRegistry] })
  const latency = new Histogram({
    name: `${METRIC_PREFIX}upstream_request_duration_seconds`,
    help: 'assisted-service call duration by endpoint',
    labelNames: ['endpoint'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [fastify.metricsRegistry]
  })
  let source: InfraEnvSource
  if (assistedService.host !== undefined) {
    source = new AssistedClient({
      scheme: assistedService.scheme,
      host: assistedService.host,
      ...(assistedService.caFile !== undefined ? { caFile: assistedService.caFile } : {}),
      proxy,
      timeoutMs: assistedService.timeoutSeconds * 1000,
      maxBodyBytes: assistedService.maxBodyBytes,
      onCall: (endpoint, status, seconds) => { calls.inc({ endpoint, status }); latency.observe({ endpoint }, seconds) }
    })
  } else if (infraEnvsDir !== undefined) {
    source = new LocalInfraEnvSource(infraEnvsDir)
  } else {
    // Demo mode before the demo InfraEnv exists: every image id is unknown.
    source = new LocalInfraEnvSource(`${fastify.config.dataDir}/demo/infraenvs`)
  }
  const cached = new CachedInfraEnvSource(source, { ttlSeconds: upstreamCacheTtlSeconds, onHit: endpoint => hits.inc({ endpoint }) })
  fastify.decorate('infraEnvSource', cached)
  fastify.addHook('onClose', async function closeInfraEnvSource () {
    await cached.close()
  })
}, { name: 'assisted-client', fastify: '5.x', dependencies: ['config', 'metrics'] })
