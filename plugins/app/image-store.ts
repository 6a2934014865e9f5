import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import { Gauge } from 'prom-client'
import { ImageWriter } from '../../services/compose/image-writer.ts'
import { loadMemoryMapper, type MemoryMapper } from '../../services/compose/memory-map.ts'
import { LARGE_BUFFER_BUDGET, ReadBuffers } from '../../services/compose/read-buffers.ts'
import { cachePuncher, ImageStore } from '../../services/store/image-store.ts'
import type { StoreFollower, StoreTiming } from '../../services/store/store-types.ts'
import { needsNmstate } from '../../services/store/os-image-entry.ts'
import { cachedBytesGauge, downloadMetrics, METRIC_PREFIX, originMetrics } from '../../services/observe/metrics.ts'
import { Readiness } from '../../services/store/readiness.ts'

declare module 'fastify' {
  interface FastifyInstance {
    imageStore: ImageStore
    /** Writes the store's images into responses: mapped slices of their files, or reads into this process's buffers. */
    imageWriter: ImageWriter
    /** What /health reports, derived from the store (or, in a worker, from the cluster). */
    readiness: Readiness
  }
}

export interface ImageStoreOptions {
  /** Faster retries for tests. */
  timing?: Partial<StoreTiming>
  /** In a worker process: the primary prepares the images, this store opens them when told. */
  follower?: StoreFollower
}

/** Memory maps where they load and are wanted, else reads; said once, at start-up. */
async function chooseFileAccess (enabled: boolean, log: FastifyBaseLogger): Promise<MemoryMapper | undefined> {
  if (!enabled) {
    log.info('image files are read into buffers (MMAP_IMAGE_FILES=false)')
    return undefined
  }
  try {
    const mapper = await loadMemoryMapper()
    log.info('image files are served from memory maps')
    return mapper
  } catch (err) {
    log.warn({ error: (err as Error).message }, 'memory maps are unavailable; image files are read into buffers')
    return undefined
  }
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
  // Read when scraped, from the store: the same in every worker.
  const perImage = (name: string, help: string, valueOf: (key: string) => boolean): void => {
    void new Gauge({
      name: `${METRIC_PREFIX}${name}`,
      help,
      labelNames: ['version', 'arch'],
      registers: [registry],
      aggregator: 'max',
      collect () {
        for (const group of store.groups) this.set({ version: group.version, arch: group.cpuArchitecture }, valueOf(store.keyOf(group)) ? 1 : 0)
      }
    })
  }
  perImage('os_image_refused', 'OS images refused for good, their bytes not servable as they are (1); /health gives the reason',
    key => store.refusal(key) !== undefined)
  perImage('os_image_ready', 'Whether each configured OS image is ready to serve (1) or not yet (0)', key => store.isReady(key))
  const log = fastify.log.child({ component: 'image-store' })
  const mapper = await chooseFileAccess(fastify.config.mmapImageFiles, log)
  const store = new ImageStore({
    config: fastify.config,
    log,
    metrics: { ...downloads, readyChanged: count => ready.set(count) },
    // A worker reads the primary's caches: the primary fetches, counts and evicts.
    ...(opts.follower === undefined ? { cacheMetrics: originMetrics(registry), ...await cachePuncher(fastify.config, log) } : {}),
    ...(opts.timing !== undefined ? { timing: opts.timing } : {}),
    ...(opts.follower !== undefined ? { follower: opts.follower } : {}),
    ...(mapper !== undefined ? { mapper } : {})
  })
  const { follower } = opts
  if (follower === undefined) cachedBytesGauge(registry, () => store.cachedBytes())
  // With workers, readiness is the cluster's: an image counts once every worker can serve it.
  const readiness = new Readiness(store, follower !== undefined)
  follower?.onServing(keys => readiness.clusterServes(keys))
  store.onChange((key, isReady) => {
    follower?.reportPrepared(key, isReady)
    const image = store.get(key)
    if (image === undefined || !needsNmstate(image.entry)) return
    nmstateMissing.set({ version: image.entry.version, arch: image.entry.cpuArchitecture }, image.nmstateArchive === undefined ? 1 : 0)
  })
  // The read-buffer budget bounds the whole service's memory, so worker processes share it.
  const budget = follower !== undefined ? Math.floor(LARGE_BUFFER_BUDGET / fastify.config.workers) : LARGE_BUFFER_BUDGET
  fastify.decorate('imageStore', store)
  fastify.decorate('imageWriter', new ImageWriter(new ReadBuffers(budget)))
  fastify.decorate('readiness', readiness)
  fastify.addHook('onReady', async function startImageStore () {
    await store.start()
  })
  fastify.addHook('onClose', async function closeImageStore () {
    await store.close()
  })
}, { name: 'image-store', fastify: '5.x', dependencies: ['config', 'metrics'] })
