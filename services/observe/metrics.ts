import { readFileSync } from 'node:fs'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { CacheMetrics } from '../origin/block-cache.ts'
import type { StoreMetrics } from '../store/store-types.ts'

export const METRIC_PREFIX = 'assisted_image_service_'

/** Download counters: in the process that downloads (the only one, or the cluster's primary). */
export function downloadMetrics (registry: Registry): Pick<StoreMetrics, 'downloadedBytes' | 'downloadFailed'> {
  const downloadedBytes = new Counter({ name: `${METRIC_PREFIX}os_image_download_bytes_total`, help: 'Bytes of OS images downloaded', registers: [registry] })
  const failures = new Counter({ name: `${METRIC_PREFIX}os_image_download_failures_total`, help: 'Failed attempts to download or prepare an OS image', registers: [registry] })
  return { downloadedBytes: n => downloadedBytes.inc(n), downloadFailed: () => failures.inc() }
}

/** Block fetches from OS image origins: in the process that fetches (the only one, or the cluster's primary). */
export function originMetrics (registry: Registry): CacheMetrics {
  const bytes = new Counter({ name: `${METRIC_PREFIX}os_image_origin_bytes_total`, help: 'Bytes of OS images fetched from their origins by blocks', registers: [registry] })
  const fetches = new Counter({
    name: `${METRIC_PREFIX}os_image_block_fetches_total`,
    help: 'Block fetches from OS image origins by outcome: ok, retried (failed, tried again), failed (given up), changed (the file changed at the origin)',
    labelNames: ['outcome'],
    registers: [registry]
  })
  const seconds = new Histogram({
    name: `${METRIC_PREFIX}os_image_block_fetch_seconds`,
    help: 'Time of one block fetch from an OS image origin',
    labelNames: ['outcome'],
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry]
  })
  const evicted = new Counter({ name: `${METRIC_PREFIX}os_image_cache_evicted_bytes_total`, help: 'Bytes of OS image blocks evicted to keep the cache budget or free a full disk', registers: [registry] })
  for (const outcome of ['ok', 'retried', 'failed', 'changed']) { fetches.inc({ outcome }, 0); seconds.zero({ outcome }) }
  return {
    fetched: n => bytes.inc(n),
    fetchEnded: (outcome, s) => { fetches.inc({ outcome }); seconds.observe({ outcome }, s) },
    evicted: n => evicted.inc(n)
  }
}

/** Bytes each OS image's block cache holds, read from the process that fetches when scraped. */
export function cachedBytesGauge (registry: Registry, read: () => Array<{ version: string, arch: string, bytes: number }>): void {
  void new Gauge({
    name: `${METRIC_PREFIX}os_image_cached_bytes`,
    help: 'Bytes of each OS image held in DATA_DIR: its block cache, or the whole file',
    labelNames: ['version', 'arch'],
    registers: [registry],
    aggregator: 'max',
    collect () {
      this.reset()
      for (const { version, arch, bytes } of read()) this.set({ version, arch }, bytes)
    }
  })
}

/** RssAnon is what a process holds of its own; VmRSS adds shared pages (mapped image files, page cache). */
const STATUS_FIELDS = { VmRSS: 'rss', RssAnon: 'rss_anon' } as const

/**
 * Memory of this process, labelled with its role (`main`, `primary`, `worker-N`) so that the aggregated
 * exposition of a cluster keeps one series per process rather than their sum.
 */
export function processMemoryMetrics (registry: Registry, processName: string): void {
  void new Gauge({
    name: `${METRIC_PREFIX}process_memory_bytes`,
    help: 'Resident memory of each process of the service: rss (VmRSS) and rss_anon (RssAnon, its private share)',
    labelNames: ['process', 'kind'] as const,
    registers: [registry],
    collect () {
      let status = ''
      try { status = readFileSync('/proc/self/status', 'utf8') } catch { /* not Linux */ }
      let found = false
      for (const [field, kind] of Object.entries(STATUS_FIELDS)) {
        const kib = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1]
        if (kib !== undefined) { this.set({ process: processName, kind }, Number(kib) * 1024); found = true }
      }
      if (!found) this.set({ process: processName, kind: 'rss' }, process.memoryUsage.rss())
    }
  })
}
