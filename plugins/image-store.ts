import fp from 'fastify-plugin'
import { Gauge } from 'prom-client'
import { ImageStore, needsNmstate, type StoreFollower, type StoreMetrics, type StoreTiming } from '../services/store/image-store.ts'
import { downloadMetrics, METRIC_PREFIX } from '../services/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    imageStore: ImageStore
  }
}

export interface ImageStoreOptions {
  /** Faster retries for tests. */
  timing?: Partial<StoreTiming>
  /** In a worker process: the primary prepares the images, this store opens them when told. */
  follower?: StoreFollower
}

export default fp<ImageStoreOptions>(async function imageStorePlugin (fastify, opts) {
  const registry = fastify.metricsRegistry
  const downloads = opts.follower === undefined ? downloadMetrics(registry) : { downloadedBytes: () => {}, downloadFailed: () => {} }
  // With worker processes the gauges are aggregated across workers: every worker holds the same value.
  const ready = new Gauge({ name: `${METRIC_PREFIX}os_images_ready`, help: 'OS images ready to serve', registers: [registry], aggregator: 'max' })
  const nmstateMissing = new Gauge({
    name: `${METRIC_PREFIX}nmstatectl_missing`,
    help: 'OS images that need nmstatectl (OpenShift >= 4.18) but have none: static networking fails for them (1)',
    labelNames: ['version', 'arch'],
    registers: [registry],
    aggregator: 'max'
  })
  const log = fastify.log.child({ component: 'image-store' })
  const store = new ImageStore({
    config: fastify.config,
    log: {
      info: (obj, msg) => log.info(obj, msg),
      warn: (obj, msg) => log.warn(obj, msg),
      error: (obj, msg) => log.error(obj, msg)
    },
    metrics: { ...downloads, readyChanged: count => ready.set(count) },
    ...(opts.timing !== undefined ? { timing: opts.timing } : {}),
    ...(opts.follower !== undefined ? { follower: opts.follower } : {})
  })
  for (const key of store.keys) fastify.readiness.register(key)
  const { follower } = opts
  // With workers, readiness is the cluster's: an image counts once every worker can serve it.
  if (follower !== undefined) follower.onServing(keys => { for (const key of store.keys) fastify.readiness.set(key, keys.has(key)) })
  store.onChange((key, isReady) => {
    if (follower !== undefined) follower.reportPrepared(key, isReady)
    else fastify.readiness.set(key, isReady)
    const image = store.get(key)
    if (image === undefined || !needsNmstate(image.entry)) return
    const missing = image.nmstate === undefined
    nmstateMissing.set({ version: image.entry.version, arch: image.entry.cpuArchitecture }, missing ? 1 : 0)
    fastify.readiness.setDegraded(key, missing ? `no nmstatectl for static networking: ${image.nmstateError ?? 'not extracted'}` : undefined)
  })
  fastify.decorate('imageStore', store)
  fastify.addHook('onReady', async function startImageStore () {
    await store.start()
  })
  fastify.addHook('onClose', async function closeImageStore () {
    await store.close()
  })
}, { name: 'image-store', fastify: '5.x', dependencies: ['config', 'readiness', 'metrics'] })
