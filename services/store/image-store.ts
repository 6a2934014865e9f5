import { mkdir, readdir, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { ComposedImage, FilePool } from '../compose/composed-image.ts'
import type { IsoKind, IsoTemplate } from '../coreos/customize.ts'
import type { BootArtifacts } from '../coreos/pxe.ts'
import type { IsoImage } from '../iso9660/reader.ts'
import { ConcurrencyLimiter } from '../limiter.ts'
import { sleep, type DownloadLog } from './download.ts'
import { ImagePreparer } from './image-preparer.ts'
import {
  contentIdFileName, deduplicateEntries, entryKey, findEntry, isoFileName, nmstatectlFileName, type OsImageEntry, type OsImageType
} from './os-image-entry.ts'

export interface StoreConfig {
  dataDir: string
  dataTempDir: string
  osImages: OsImageEntry[]
  imageServiceBaseUrl: string
  osImagesRequestHeaders: Record<string, string>
  osImagesRequestQueryParams: Record<string, string>
  osImageDownloadCaFile?: string
  insecureSkipVerify: boolean
  proxy: { http?: string, https?: string, noProxy?: string }
}

export interface StoreLog extends DownloadLog {
  error: (obj: object, msg: string) => void
}

export interface StoreMetrics {
  downloadedBytes: (n: number) => void
  downloadFailed: () => void
  readyChanged: (readyCount: number) => void
}

export interface StoreTiming {
  parallelDownloads: number
  downloadAttempts: number
  downloadBackoffMs: number
  retryBaseMs: number
  retryMaxMs: number
  progressIntervalMs: number
}

const DEFAULT_TIMING: StoreTiming = {
  parallelDownloads: 2,
  downloadAttempts: 5,
  downloadBackoffMs: 1000,
  retryBaseMs: 5000,
  retryMaxMs: 5 * 60_000,
  progressIntervalMs: 5000
}

/** One OS image, downloaded, validated and prepared: what the routes serve from. */
export interface PreparedImage {
  entry: OsImageEntry
  key: string
  isoPath: string
  iso: IsoImage
  templates: Partial<Record<IsoKind, IsoTemplate>>
  artifacts: BootArtifacts
  initrd?: ComposedImage
  /** Boot artifacts as served by /boot-artifacts. */
  artifactImages: Partial<Record<'rootfs' | 'kernel' | 'ins-file', ComposedImage>>
  /** gzip cpio with usr/bin/nmstatectl, for openshift_version >= 4.18.0-ec.0. */
  nmstate?: Buffer
  /** Why an entry that needs nmstatectl has none: requests with static networking fail with this. */
  nmstateError?: string
  lastModified: Date
  pool: FilePool
}

/**
 * A store that prepares nothing itself: another process (the cluster's
 * primary) downloads and checks the images; this one opens each when told.
 */
export interface StoreFollower {
  /** Resolves once the leader has the image ready in DATA_DIR. */
  ready (key: string): Promise<void>
  /** Tells the leader whether this process can serve an image now. */
  reportPrepared (key: string, ready: boolean): void
  /** Calls `listener` with the images every process can serve, whenever that changes. */
  onServing (listener: (keys: ReadonlySet<string>) => void): void
}

type State = { status: 'pending' | 'failed', error?: string, failures: number } | { status: 'ready', image: PreparedImage }

/**
 * The catalogue of OS images: downloads what is missing into DATA_DIR with
 * upstream-compatible names, checks it, prepares templates, and tells which
 * image versions can be served. A failing image is retried with backoff and
 * never blocks the others.
 */
export class ImageStore {
  readonly entries: readonly OsImageEntry[]
  readonly groups: readonly OsImageEntry[]
  readonly #config: StoreConfig
  readonly #log: StoreLog
  readonly #metrics: StoreMetrics | undefined
  readonly #timing: StoreTiming
  readonly #states = new Map<string, State>()
  readonly #listeners: Array<(key: string, ready: boolean) => void> = []
  readonly #abort = new AbortController()
  readonly #follower: StoreFollower | undefined
  readonly #preparer: ImagePreparer
  #tasks: Array<Promise<void>> = []
  #closed = false

  constructor (options: { config: StoreConfig, log: StoreLog, metrics?: StoreMetrics, timing?: Partial<StoreTiming>, follower?: StoreFollower }) {
    this.#follower = options.follower
    this.#config = options.config
    this.#log = options.log
    this.#metrics = options.metrics
    this.#timing = { ...DEFAULT_TIMING, ...options.timing }
    this.#preparer = new ImagePreparer({
      config: this.#config,
      log: this.#log,
      ...(this.#metrics !== undefined ? { metrics: this.#metrics } : {}),
      timing: this.#timing,
      downloads: new ConcurrencyLimiter(this.#timing.parallelDownloads, 0),
      follower: this.#follower !== undefined,
      signal: this.#abort.signal
    })
    this.entries = options.config.osImages
    this.groups = deduplicateEntries(this.entries)
    for (const group of this.groups) this.#states.set(entryKey(group), { status: 'pending', failures: 0 })
  }

  get keys (): string[] { return [...this.#states.keys()] }

  /** The configured entry a request names (RHCOS version first, then openshift_version). */
  find (version: string, arch: string, type?: OsImageType): OsImageEntry | undefined {
    return findEntry(type === undefined ? this.entries : this.entries.filter(e => e.type === type), version, arch)
  }

  keyOf (entry: OsImageEntry): string { return entryKey(entry) }

  get (key: string): PreparedImage | undefined {
    const state = this.#states.get(key)
    return state?.status === 'ready' ? state.image : undefined
  }

  isReady (key: string): boolean { return this.#states.get(key)?.status === 'ready' }
  allReady (): boolean { return [...this.#states.values()].every(s => s.status === 'ready') }

  onChange (listener: (key: string, ready: boolean) => void): void { this.#listeners.push(listener) }

  /** Cleans DATA_DIR, then prepares every image in the background. */
  async start (): Promise<void> {
    await mkdir(this.#config.dataDir, { recursive: true })
    if (this.#follower !== undefined) {
      // DATA_DIR belongs to the leader: nothing is cleaned or downloaded here.
      this.#tasks = this.groups.map(group => this.#prepareWithRetry(group))
      return
    }
    await rm(this.#config.dataTempDir, { recursive: true, force: true })
    await mkdir(this.#config.dataTempDir, { recursive: true })
    await this.#cleanup()
    this.#tasks = this.groups.map(group => this.#prepareWithRetry(group))
  }

  /** Resolves when every image is ready or has failed at least once (for tests and startup logs). */
  async settled (): Promise<void> {
    while (![...this.#states.values()].every(s => s.status === 'ready' || s.failures > 0)) {
      await new Promise(resolve => setTimeout(resolve, 20))
      if (this.#closed) return
    }
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#abort.abort(new Error('image store closing'))
    await Promise.allSettled(this.#tasks)
    for (const state of this.#states.values()) {
      if (state.status === 'ready') {
        await state.image.iso.close()
        await state.image.pool.close()
      }
    }
  }

  #setState (key: string, state: State): void {
    const wasReady = this.#states.get(key)?.status === 'ready'
    this.#states.set(key, state)
    const ready = state.status === 'ready'
    if (ready !== wasReady) {
      for (const listener of this.#listeners) listener(key, ready)
      this.#metrics?.readyChanged([...this.#states.values()].filter(s => s.status === 'ready').length)
    }
  }

  /** Files in DATA_DIR that no configured entry explains are removed; configured ISOs and nmstatectl caches stay. */
  async #cleanup (): Promise<void> {
    const keep = new Set<string>()
    for (const entry of this.entries) {
      keep.add(isoFileName(entry))
      keep.add(nmstatectlFileName(entry))
      keep.add(contentIdFileName(entry))
    }
    for (const name of await readdir(this.#config.dataDir)) {
      if (keep.has(name)) continue
      const path = join(this.#config.dataDir, name)
      const info = await stat(path).catch(() => undefined)
      // Directories (demo/, tmp/, short links) belong to other parts of the service.
      if (info?.isFile() !== true) continue
      if (!/^(rhcos-|nmstatectl-)/.test(name) && !name.endsWith('.part')) continue
      this.#log.info({ file: name }, 'removing a file no configured OS image explains')
      await unlink(path).catch(() => {})
    }
  }

  async #prepareWithRetry (group: OsImageEntry): Promise<void> {
    const key = entryKey(group)
    if (this.#follower !== undefined) {
      await Promise.race([this.#follower.ready(key), new Promise(resolve => this.#abort.signal.addEventListener('abort', resolve, { once: true }))])
    }
    for (let failures = 0; !this.#closed; failures++) {
      try {
        const image = await this.#preparer.prepare(group, key)
        if (this.#closed) { await image.iso.close(); await image.pool.close(); return }
        this.#setState(key, { status: 'ready', image })
        this.#log.info({ image: key }, 'OS image ready')
        return
      } catch (err) {
        if (this.#closed) return
        this.#metrics?.downloadFailed()
        const delay = Math.min(this.#timing.retryMaxMs, this.#timing.retryBaseMs * 2 ** failures) * (0.75 + Math.random() / 4)
        this.#log.error({ image: key, error: (err as Error).message, retryInMs: Math.round(delay) }, 'OS image not ready, will retry')
        this.#setState(key, { status: 'failed', error: (err as Error).message, failures: failures + 1 })
        // A retry wait ends early on close; its abort listener is removed either way (no leak per retry).
        await sleep(delay, this.#abort.signal).catch(() => {})
      }
    }
  }
}

