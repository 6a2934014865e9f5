import { unlink } from 'node:fs/promises'
import { IsoImage } from '../iso9660/reader.ts'
import type { ConcurrencyLimiter } from '../http/limiter.ts'
import { syncDirectory, writeAtomically } from '../io/atomic-write.ts'
import { saveContentId } from './content-id.ts'
import { download } from './download.ts'
import type { OsImageEntry } from './os-image-entry.ts'
import type { StoreConfig, StoreLog, StoreMetrics, StoreTiming } from './store-types.ts'
import { validateIso } from './validate.ts'

export interface OpenIsoOptions {
  log: StoreLog
  /** The OS image key, for log lines. */
  key: string
  /** The file is ours (downloaded into DATA_DIR): an unreadable or invalid one is deleted so it is downloaded again. */
  deleteInvalid: boolean
}

/** Opens and validates the ISO at `path`; undefined when there is none (or there was one of ours, deleted). */
export async function openValidIso (path: string, { log, key, deleteInvalid }: OpenIsoOptions): Promise<IsoImage | undefined> {
  let iso: IsoImage
  try {
    iso = await IsoImage.open(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    if (!deleteInvalid) throw err
    log.warn({ image: key, error: (err as Error).message }, 'existing OS image is unreadable, downloading it again')
    await unlink(path).catch(() => {})
    return undefined
  }
  try {
    validateIso(iso)
    return iso
  } catch (err) {
    await iso.close()
    if (!deleteInvalid) throw err
    log.warn({ image: key, error: (err as Error).message }, 'existing OS image is invalid, downloading it again')
    await unlink(path).catch(() => {})
    return undefined
  }
}

export interface DownloadIsoOptions {
  config: StoreConfig
  log: StoreLog
  metrics?: Pick<StoreMetrics, 'downloadedBytes'> | undefined
  timing: StoreTiming
  downloads: ConcurrencyLimiter
  signal: AbortSignal
  /** Where the content id of the ISO is recorded. */
  sidecar: string
}

/**
 * Downloads an entry's ISO into DATA_DIR's temporary folder and moves it to
 * `finalPath` only once its sha256 (when configured) and layout check out;
 * its content id is recorded on the way, from the hash the download computed.
 */
export async function downloadIso (group: OsImageEntry, key: string, finalPath: string, options: DownloadIsoOptions): Promise<void> {
  const { config, log, timing } = options
  const release = await options.downloads.acquire(options.signal)
  try {
    log.info({ image: key }, 'downloading OS image')
    const started = Date.now()
    let downloaded = { size: 0, sha256: '' }
    await writeAtomically(finalPath, async temp => {
      downloaded = await download(group.url, temp, {
        headers: config.osImagesRequestHeaders,
        query: config.osImagesRequestQueryParams,
        ...(config.osImageDownloadCaFile !== undefined ? { caFile: config.osImageDownloadCaFile } : {}),
        insecureSkipVerify: config.insecureSkipVerify,
        proxy: config.proxy,
        attempts: timing.downloadAttempts,
        backoffMs: timing.downloadBackoffMs,
        progressIntervalMs: timing.progressIntervalMs,
        log,
        label: key,
        signal: options.signal,
        onBytes: n => options.metrics?.downloadedBytes(n)
      })
      if (group.sha256 !== undefined && downloaded.sha256 !== group.sha256) {
        throw new Error(`sha256 mismatch: expected ${group.sha256}, got ${downloaded.sha256}`)
      }
      const check = await IsoImage.open(temp)
      try { validateIso(check) } finally { await check.close() }
    }, { tempDir: config.dataTempDir })
    await saveContentId(options.sidecar, finalPath, downloaded.sha256)
    await syncDirectory(config.dataDir)
    log.info({ image: key, bytes: downloaded.size, seconds: Math.round((Date.now() - started) / 100) / 10 }, 'OS image downloaded')
  } finally {
    release()
  }
}
