import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FilePool } from '../compose/file-pool.ts'
import type { MemoryMapper } from '../compose/memory-map.ts'
import { findBootArtifacts } from '../coreos/pxe.ts'
import { decDateTime } from '../iso9660/dates.ts'
import type { ConcurrencyLimiter } from '../http/limiter.ts'
import { contentId } from './content-id.ts'
import { downloadIso, openValidIso } from './iso-file.ts'
import { preparedNmstate } from './nmstate-cache.ts'
import type { PreparedImage, StoreConfig, StoreFollower, StoreLog, StoreMetrics, StoreTiming } from './store-types.ts'
import { contentIdFileName, isoFileName, needsNmstate, type OsImageEntry } from './os-image-entry.ts'
import { artifactImages, isoTemplates } from './templates.ts'

export interface PreparerOptions {
  config: StoreConfig
  log: StoreLog
  metrics?: Pick<StoreMetrics, 'downloadedBytes'>
  timing: StoreTiming
  /** Limits downloads running at once. */
  downloads: ConcurrencyLimiter
  /** Another process (the cluster's primary) downloads and extracts; this one only opens what is in DATA_DIR. */
  follower?: Pick<StoreFollower, 'nmstateError'>
  /** Aborts downloads when the store closes. */
  signal: AbortSignal
  /** Maps the ISOs that responses stream from; unset: they are read. */
  mapper?: MemoryMapper
}

/**
 * Turns a configured OS image into what the routes serve, one step after the
 * other: the ISO in DATA_DIR (`iso-file.ts`: validated, downloaded atomically
 * when missing), its content id (`content-id.ts`), nmstatectl
 * (`nmstate-cache.ts`), templates and boot artifacts (`templates.ts`). No
 * state of its own beyond DATA_DIR: the image store decides when to prepare
 * and what to do on failure.
 */
export class ImagePreparer {
  readonly #config: StoreConfig
  readonly #log: StoreLog
  readonly #metrics: Pick<StoreMetrics, 'downloadedBytes'> | undefined
  readonly #timing: StoreTiming
  readonly #downloads: ConcurrencyLimiter
  readonly #follower: Pick<StoreFollower, 'nmstateError'> | undefined
  readonly #signal: AbortSignal
  readonly #mapper: MemoryMapper | undefined

  constructor (options: PreparerOptions) {
    this.#config = options.config
    this.#log = options.log
    this.#metrics = options.metrics
    this.#timing = options.timing
    this.#downloads = options.downloads
    this.#follower = options.follower
    this.#signal = options.signal
    this.#mapper = options.mapper
  }

  isoPath (entry: OsImageEntry): string {
    const url = new URL(entry.url)
    return url.protocol === 'file:' ? fileURLToPath(url) : join(this.#config.dataDir, isoFileName(entry))
  }

  /** Downloads (unless a follower), validates and prepares one OS image; the caller retries on failure. */
  async prepare (group: OsImageEntry, key: string): Promise<PreparedImage> {
    const path = this.isoPath(group)
    const isFileUrl = new URL(group.url).protocol === 'file:'
    const sidecar = join(this.#config.dataDir, contentIdFileName(group))
    let iso = await openValidIso(path, { log: this.#log, key, deleteInvalid: !isFileUrl && this.#follower === undefined })
    if (iso === undefined) {
      if (isFileUrl) throw new Error(`${path} is missing`)
      if (this.#follower !== undefined) throw new Error(`${path} is missing; the primary process downloads it`)
      await downloadIso(group, key, path, {
        config: this.#config, log: this.#log, metrics: this.#metrics, timing: this.#timing, downloads: this.#downloads, signal: this.#signal, sidecar
      })
      iso = await openValidIso(path, { log: this.#log, key, deleteInvalid: false })
      if (iso === undefined) throw new Error('downloaded file vanished')
    }
    const pool = new FilePool({
      ...(this.#mapper !== undefined ? { mapper: this.#mapper } : {}),
      onMapFailure: (file, err) => this.#log.warn({ image: key, file, error: err.message }, 'cannot map the OS image; reading it instead')
    })
    try {
      // The file the layout was read from, not whatever lies at the path by the time a request comes.
      await pool.openExpected(path, iso.identity)
      // Content, not location, names the ISO: every replica then gives the same ETags.
      pool.identify(path, await contentId(iso.identity, sidecar, { log: this.#log, key, follower: this.#follower !== undefined }))
      const artifacts = await findBootArtifacts(iso)
      const { nmstateArchive, nmstateError } = needsNmstate(group)
        ? await preparedNmstate(group, key, artifacts, { dataDir: this.#config.dataDir, log: this.#log, follower: this.#follower })
        : {}
      const templates = await isoTemplates(iso, group, pool, { imageServiceBaseUrl: this.#config.imageServiceBaseUrl, nmstate: nmstateArchive })
      return {
        entry: group,
        key,
        isoPath: path,
        iso,
        templates,
        artifacts,
        ...await artifactImages(artifacts, pool),
        ...(nmstateArchive !== undefined ? { nmstateArchive } : {}),
        ...(nmstateError !== undefined ? { nmstateError } : {}),
        // The ISO's own creation date, the same in every copy; the file's mtime only when it has none.
        lastModified: decDateTime(iso.primary.created) ?? new Date(Math.floor(iso.identity.mtimeMs / 1000) * 1000),
        pool
      }
    } catch (err) {
      await iso.close()
      await pool.close()
      throw err
    }
  }
}
