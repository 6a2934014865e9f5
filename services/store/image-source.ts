import { mkdir, readdir, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BootArtifacts } from '../coreos/pxe.ts'
import type { ConcurrencyLimiter } from '../http/limiter.ts'
import type { ByteGate } from '../io/byte-gate.ts'
import type { HolePuncher } from '../io/hole-punch.ts'
import { IsoImage } from '../iso9660/reader.ts'
import type { BlockCache, CacheMetrics } from '../origin/block-cache.ts'
import { BlockRecord } from '../origin/block-record.ts'
import type { CacheBudget } from '../origin/cache-budget.ts'
import { openBlockCache } from '../origin/open-cache.ts'
import { RemoteBlocks } from '../origin/remote-blocks.ts'
import { contentId, savedContentId } from './content-id.ts'
import { downloadIso, openValidIso } from './iso-file.ts'
import { extractedNmstate, leadersNmstate } from './nmstate-cache.ts'
import {
  blockCacheFileName, blockRecordFileName, contentIdFileName, isoFileName, nmstateArchiveFileName, nmstatectlFileName, type OsImageEntry
} from './os-image-entry.ts'
import type { PreparedImage, StoreConfig, StoreFollower, StoreLog, StoreMetrics, StoreTiming } from './store-types.ts'
import { validateIso } from './validate.ts'

/** An image's ISO, opened and checked, as preparation reads it and responses will stream it. */
export interface OpenedIso {
  /** The file responses stream from: the ISO in DATA_DIR, a `file://` image, or the block cache. */
  path: string
  iso: IsoImage
  /** What names the ISO's bytes in ETags, the same on every replica. */
  contentId: string
  /** Set when the file is a block cache: its bytes are asked for before they are read. */
  gate?: ByteGate
  /** The cache this process fetches into (the leader's only). */
  blocks?: BlockCache
}

/**
 * Where an image's bytes and the files derived from them come from. Chosen
 * once per process: the leader (a single process, or the cluster's primary)
 * downloads, fetches blocks, hashes and extracts; a follower (a worker) opens
 * what the leader left in DATA_DIR and asks the leader for absent blocks.
 */
export interface ImageSource {
  /**
   * Whether this process decides about images: refuses one for good, fills
   * caches, records a failed replacement. A follower leaves all that to the leader.
   */
  readonly decides: boolean
  /** Readies DATA_DIR for this process's work, before any image is prepared. */
  start (entries: readonly OsImageEntry[]): Promise<void>
  /** Resolves once the image may be prepared here: with the reason, when it is refused for good. */
  available (key: string, signal: AbortSignal): Promise<string | undefined>
  openIso (group: OsImageEntry, key: string): Promise<OpenedIso>
  nmstate (group: OsImageEntry, key: string, artifacts: BootArtifacts): Promise<Pick<PreparedImage, 'nmstateArchive' | 'nmstateError'>>
}

/** The path an entry's whole ISO has: its `file://` path, or its upstream-compatible name in DATA_DIR. */
export function wholeIsoPath (config: Pick<StoreConfig, 'dataDir'>, entry: OsImageEntry): string {
  const url = new URL(entry.url)
  return url.protocol === 'file:' ? fileURLToPath(url) : join(config.dataDir, isoFileName(entry))
}

export function cacheFiles (config: Pick<StoreConfig, 'dataDir'>, entry: OsImageEntry): { cache: string, record: string } {
  return { cache: join(config.dataDir, blockCacheFileName(entry)), record: join(config.dataDir, blockRecordFileName(entry)) }
}

export interface LeaderSourceOptions {
  config: StoreConfig
  log: StoreLog
  metrics?: Pick<StoreMetrics, 'downloadedBytes'> | undefined
  cacheMetrics?: CacheMetrics | undefined
  timing: StoreTiming
  /** Limits whole downloads running at once. */
  downloads: ConcurrencyLimiter
  budget: CacheBudget
  punch?: HolePuncher | undefined
  /** Which blocks of an image's cache the other processes hold (they are not evicted). */
  heldElsewhere?: ((key: string, inode: number, blocks: number[]) => Promise<number[]>) | undefined
  /** An image's origin changed: it is to be prepared again. */
  onOriginChanged: (key: string) => void
  signal: AbortSignal
}

/** The leader: a whole file in DATA_DIR when there is one, else the origin read by blocks, else a whole download. */
export class LeaderSource implements ImageSource {
  readonly decides = true
  readonly #options: LeaderSourceOptions
  /** Images that are not read by blocks (a range-less origin, a file:// image), said once. */
  readonly #rangeless = new Set<string>()

  constructor (options: LeaderSourceOptions) {
    this.#options = options
  }

  /** Empties the download scratch space and removes what no configured entry explains from DATA_DIR. */
  async start (entries: readonly OsImageEntry[]): Promise<void> {
    const { config, log } = this.#options
    await rm(config.dataTempDir, { recursive: true, force: true })
    await mkdir(config.dataTempDir, { recursive: true })
    const keep = new Set(entries.flatMap(entry => [
      isoFileName(entry), nmstatectlFileName(entry), nmstateArchiveFileName(entry), contentIdFileName(entry),
      blockCacheFileName(entry), blockRecordFileName(entry)
    ]))
    for (const name of await readdir(config.dataDir)) {
      if (keep.has(name)) continue
      const path = join(config.dataDir, name)
      const info = await stat(path).catch(() => undefined)
      // Directories (demo/, tmp/, short links) belong to other parts of the service.
      if (info?.isFile() !== true) continue
      if (!/^(rhcos-|nmstatectl-)/.test(name) && !name.endsWith('.part')) continue
      log.info({ file: name }, 'removing a file no configured OS image explains')
      await unlink(path).catch(() => {})
    }
  }

  async available (): Promise<undefined> { return undefined }

  async openIso (group: OsImageEntry, key: string): Promise<OpenedIso> {
    const { config, log } = this.#options
    const path = wholeIsoPath(config, group)
    const isFileUrl = new URL(group.url).protocol === 'file:'
    const sidecar = join(config.dataDir, contentIdFileName(group))
    if (isFileUrl && (config.osImagesFetch ?? 'lazy') !== 'eager' && !this.#rangeless.has(key)) {
      this.#rangeless.add(key)
      log.info({ image: key }, 'OS image read in place: a file:// image is not fetched by blocks')
    }
    const whole = await openValidIso(path, { log, key, deleteInvalid: !isFileUrl })
    if (whole !== undefined) return await this.#identified(path, whole, sidecar, key)
    if (isFileUrl) throw new Error(`${path} is missing`)
    if ((config.osImagesFetch ?? 'lazy') !== 'eager' && !this.#rangeless.has(key)) {
      const cached = await this.#openCache(group, key)
      if (cached !== undefined) return cached
    }
    await downloadIso(group, key, path, { ...this.#options, sidecar })
    const downloaded = await openValidIso(path, { log, key, deleteInvalid: false })
    if (downloaded === undefined) throw new Error('downloaded file vanished')
    return await this.#identified(path, downloaded, sidecar, key)
  }

  async nmstate (group: OsImageEntry, key: string, artifacts: BootArtifacts): Promise<Pick<PreparedImage, 'nmstateArchive' | 'nmstateError'>> {
    return await extractedNmstate(group, key, artifacts, { dataDir: this.#options.config.dataDir, log: this.#options.log })
  }

  async #identified (path: string, iso: IsoImage, sidecar: string, key: string): Promise<OpenedIso> {
    try {
      return { path, iso, contentId: await contentId(iso.identity, sidecar, { log: this.#options.log, key }) }
    } catch (err) {
      await iso.close()
      throw err
    }
  }

  /** The image's block cache, opened and its ISO checked; undefined (said once) when the origin cannot be read by ranges. */
  async #openCache (group: OsImageEntry, key: string): Promise<OpenedIso | undefined> {
    const { config, log, heldElsewhere } = this.#options
    let inode = 0
    // The cache's inode, set once it is open: the eviction asks the other processes about that file.
    const opened = await openBlockCache({
      key,
      url: group.url,
      client: {
        headers: config.osImagesRequestHeaders,
        query: config.osImagesRequestQueryParams,
        ...(config.osImageDownloadCaFile !== undefined ? { caFile: config.osImageDownloadCaFile } : {}),
        insecureSkipVerify: config.insecureSkipVerify,
        proxy: config.proxy,
        // A third of a reader's wait per attempt: one hung connection still leaves time for a retry.
        timeoutMs: Math.max(1000, Math.floor((config.osImagesFetchTimeoutSeconds ?? 30) * 1000 / 3))
      },
      files: cacheFiles(config, group),
      sha256: group.sha256,
      waitMs: (config.osImagesFetchTimeoutSeconds ?? 30) * 1000,
      log,
      metrics: this.#options.cacheMetrics,
      budget: this.#options.budget,
      punch: this.#options.punch,
      heldElsewhere: heldElsewhere !== undefined ? async blocks => await heldElsewhere(key, inode, blocks) : undefined,
      onChanged: () => this.#options.onOriginChanged(key),
      signal: this.#options.signal
    })
    if ('rangeless' in opened) {
      this.#rangeless.add(key)
      log.info({ image: key, reason: opened.rangeless }, 'OS image downloaded whole: its origin cannot be read by blocks')
      return undefined
    }
    try {
      inode = opened.inode
      const iso = await IsoImage.open(opened.path, { gate: opened })
      try {
        validateIso(iso)
      } catch (err) {
        await iso.close()
        throw err
      }
      log.info({ image: key, bytes: opened.size, cachedBytes: opened.cachedBytes }, 'OS image read from its origin by blocks')
      return { path: opened.path, iso, contentId: opened.contentId, gate: opened, blocks: opened }
    } catch (err) {
      await opened.close()
      throw err
    }
  }
}

/** A follower: what the leader left in DATA_DIR, a whole file or a block cache whose absent blocks the leader fetches. */
export class FollowerSource implements ImageSource {
  readonly decides = false
  readonly #config: StoreConfig
  readonly #log: StoreLog
  readonly #leader: StoreFollower

  constructor (config: StoreConfig, log: StoreLog, leader: StoreFollower) {
    this.#config = config
    this.#log = log
    this.#leader = leader
  }

  /** DATA_DIR belongs to the leader: nothing is cleaned or downloaded here. */
  async start (): Promise<void> {}

  /** Once the leader says the image is ready, or refused (for its reason). */
  async available (key: string, signal: AbortSignal): Promise<string | undefined> {
    await Promise.race([this.#leader.ready(key), new Promise(resolve => signal.addEventListener('abort', resolve, { once: true }))])
    return this.#leader.refusal(key)
  }

  async openIso (group: OsImageEntry, key: string): Promise<OpenedIso> {
    const path = wholeIsoPath(this.#config, group)
    const whole = await openValidIso(path, { log: this.#log, key, deleteInvalid: false })
    if (whole !== undefined) {
      try {
        // Hashing a multi-GB file is CPU work a serving process must not do: the leader hashes before it says ready.
        const saved = await savedContentId(join(this.#config.dataDir, contentIdFileName(group)), whole.identity)
        if (saved === undefined) throw new Error(`${path} has no content hash from the primary yet`)
        return { path, iso: whole, contentId: saved }
      } catch (err) {
        await whole.close()
        throw err
      }
    }
    const files = cacheFiles(this.#config, group)
    const header = await BlockRecord.readHeader(files.record)
    const inode = await stat(files.cache).then(s => s.ino, () => undefined)
    if (header === undefined || inode === undefined) throw new Error(`${path} is missing; the primary process downloads it`)
    const gate = new RemoteBlocks(header.size, header.blockSize, async (offset, length, readAhead) => {
      await this.#leader.askForBytes(key, inode, offset, length, readAhead)
    }, () => this.#leader.served(key))
    this.#leader.onEvicting(key, inode, blocks => gate.evicting(blocks))
    const iso = await IsoImage.open(files.cache, { gate })
    if (iso.identity.ino !== inode) {
      await iso.close()
      throw new Error(`${files.cache} was replaced while it was being opened`)
    }
    return { path: files.cache, iso, contentId: header.contentId, gate }
  }

  /** The leader's nmstatectl: searching a rootfs is CPU work no serving process does, so the artifacts are not read here. */
  async nmstate (group: OsImageEntry, key: string): Promise<Pick<PreparedImage, 'nmstateArchive' | 'nmstateError'>> {
    return await leadersNmstate(group, key, { dataDir: this.#config.dataDir, log: this.#log, leader: this.#leader })
  }
}
