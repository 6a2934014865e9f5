import { readFileSync } from 'node:fs'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { StoreMetrics } from '../store/store-types.ts'

export const METRIC_PREFIX = 'assisted_image_service_'

/** Download counters: in the process that downloads (the only one, or the cluster's primary). */
export function downloadMetrics (registry: Registry): Pick<StoreMetrics, 'downloadedBytes' | 'downloadFailed'> {
  const downloadedBytes = new Counter({ name: `${METRIC_PREFIX}os_image_download_bytes_total`, help: 'Bytes of OS images downloaded', registers: [registry] })
  const failures = new Counter({ name: `${METRIC_PREFIX}os_image_download_failures_total`, help: 'Failed attempts to download or prepare an OS image', registers: [registry] })
  return { downloadedBytes: n => downloadedBytes.inc(n), downloadFailed: () => failures.inc() }
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
