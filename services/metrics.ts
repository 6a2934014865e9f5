import { Counter, type Registry } from 'prom-client'
import type { StoreMetrics } from './store/image-store.ts'

export const METRIC_PREFIX = 'assisted_image_service_'

/** Download counters: in the process that downloads (the only one, or the cluster's primary). */
export function downloadMetrics (registry: Registry): Pick<StoreMetrics, 'downloadedBytes' | 'downloadFailed'> {
  const downloadedBytes = new Counter({ name: `${METRIC_PREFIX}os_image_download_bytes_total`, help: 'Bytes of OS images downloaded', registers: [registry] })
  const failures = new Counter({ name: `${METRIC_PREFIX}os_image_download_failures_total`, help: 'Failed attempts to download or prepare an OS image', registers: [registry] })
  return { downloadedBytes: n => downloadedBytes.inc(n), downloadFailed: () => failures.inc() }
}
