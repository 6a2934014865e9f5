import { mkdir, readdir, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { MemoryMapper } from '../compose/memory-map.ts'
import { DomainError } from '../errors.ts'
import { ConcurrencyLimiter } from '../http/limiter.ts'
import { backoffDelay, sleep } from '../io/backoff.ts'
import type { PreparedImage, StoreConfig, StoreFollower, StoreLog, StoreMetrics, StoreTiming } from './store-types.ts'
import { ImagePreparer } from './image-preparer.ts'
import {
  contentIdFileName, deduplicateEntries, entryKey, findEntry, isoFileName, nmstateArchiveFileName, nmstatectlFileName, type OsImageEntry, type OsImageType
} from './os-image-entry.ts'

const DEFAULT_TIMING: StoreTiming = {
  parallelDownloads: 2,
  downloadAttempts: 5,
  downloadBackoffMs: 1000,
  retryBaseMs: 5000,
  retryMaxMs: 5 * 60_000,
  progressIntervalMs: 5000,
  identityCheckMs: 10_000,
  retiredLingerMs: 90_000
}

type State =
  | { status: 'pending' | 'failed', error?: string, failures: number }
  | { status: 'ready', image: PreparedImage }
  | { status: 'refused', error: string }

/**
 * Failures that say the image itself cannot be served (its layout, its embed
 * areas, its boot configuration): retrying them only downloads or reads the
 * same bytes again. Network, disk and upstream failures stay worth a retry.
 */
const PERMANENT = new Set(['ISO_FORMAT', 'IMG_INVALID_ISO', 'IMG_EMBED_AREA_INVALID', 'IMG_EMBED_AREA_TOO_SMALL', 'IMG_NO_IGNITION_AREA',
  'IMG_KARGS_UNSUPPORTED', 'IMG_MINIMAL_TEMPLATE', 'IMG_PATCH_OVERLAP', 'CPIO_FORMAT'])

function isPermanentFailure (err: unknown): boolean {
  return err instanceof DomainError && PERMANENT.has(err.code)
}

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
  #identityTimer: NodeJS.Timeout | undefined
  #checking: Promise<void> | undefined
  /** Replaced images, until their linger ends. */
  readonly #retired = new Map<NodeJS.Timeout, PreparedImage>()
  /** A replacement file that failed to prepare, by image: not tried again until it changes. */
  readonly #failedReplacements = new Map<string, string>()

  constructor (options: {
    config: StoreConfig
    log: StoreLog
    metrics?: StoreMetrics
    timing?: Partial<StoreTiming>
    follower?: StoreFollower
    /** Maps the image files responses stream from; unset: they are read. */
    mapper?: MemoryMapper
  }) {
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
      ...(this.#follower !== undefined ? { follower: this.#follower } : {}),
      signal: this.#abort.signal,
      ...(options.mapper !== undefined ? { mapper: options.mapper } : {})
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

  /** Why an image is refused for good (its bytes cannot be served), or undefined. */
  refusal (key: string): string | undefined {
    const state = this.#states.get(key)
    return state?.status === 'refused' ? state.error : undefined
  }

  allReady (): boolean { return [...this.#states.values()].every(s => s.status === 'ready') }

  onChange (listener: (key: string, ready: boolean) => void): void { this.#listeners.push(listener) }

  /** Cleans DATA_DIR, then prepares every image in the background. */
  async start (): Promise<void> {
    this.#identityTimer = setInterval(() => { void this.checkReplaced() }, this.#timing.identityCheckMs)
    this.#identityTimer.unref()
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
    while (![...this.#states.values()].every(s => s.status === 'ready' || s.status === 'refused' || s.failures > 0)) {
      await new Promise(resolve => setTimeout(resolve, 20))
      if (this.#closed) return
    }
  }

  /**
   * Closes every image. Files that responses still stream from close after the
   * last of them; this resolves once every file is closed.
   */
  async close (): Promise<void> {
    this.#closed = true
    clearInterval(this.#identityTimer)
    this.#abort.abort(new Error('image store closing'))
    await Promise.allSettled(this.#tasks)
    await this.#checking
    const closing = [...this.#retired].map(([timer, image]) => { clearTimeout(timer); return closeImage(image) })
    this.#retired.clear()
    for (const state of this.#states.values()) if (state.status === 'ready') closing.push(closeImage(state.image))
    await Promise.all(closing)
  }

  /**
   * Swaps in any ready image whose file was replaced (another file renamed
   * over it, by an operator or a replica sharing DATA_DIR). The old image keeps
   * serving until the new one is ready, and its files stay open and mapped for
   * the responses still streaming from them. A file that vanished, or whose
   * replacement does not prepare, leaves the old image serving.
   */
  checkReplaced (): Promise<void> {
    this.#checking ??= this.#swapReplaced().finally(() => { this.#checking = undefined })
    return this.#checking
  }

  async #swapReplaced (): Promise<void> {
    for (const [key, state] of this.#states) {
      if (this.#closed || state.status !== 'ready') continue
      const { identity } = state.image.iso
      const now = await stat(identity.path).catch(() => undefined)
      if (now === undefined) continue
      if (now.ino === identity.ino && now.dev === identity.dev && now.size === identity.size && now.mtimeMs === identity.mtimeMs) continue
      if (this.#failedReplacements.get(key) === `${now.ino}:${now.size}:${now.mtimeMs}`) continue
      this.#log.info({ image: key }, 'OS image file replaced; preparing the new one')
      let image: PreparedImage
      try {
        image = await this.#preparer.prepare(state.image.entry, key)
      } catch (err) {
        if (this.#follower !== undefined) {
          // The primary checks the new file (and hashes it) on its own tick: this process tries again on its next.
          this.#log.info({ image: key, error: (err as Error).message }, 'the replaced OS image file is not ready here yet; serving the previous one')
          continue
        }
        this.#failedReplacements.set(key, `${now.ino}:${now.size}:${now.mtimeMs}`)
        this.#log.error({ image: key, error: (err as Error).message }, 'the replaced OS image file cannot be served; serving the previous one')
        continue
      }
      if (this.#closed || this.#states.get(key) !== state) { await closeImage(image); continue }
      this.#failedReplacements.delete(key)
      this.#states.set(key, { status: 'ready', image })
      this.#retire(state.image)
      this.#log.info({ image: key }, 'OS image replaced')
    }
  }

  #setState (key: string, state: State): void {
    const wasReady = this.#states.get(key)?.status === 'ready'
    this.#states.set(key, state)
    const ready = state.status === 'ready'
    if (ready !== wasReady || state.status === 'refused') {
      for (const listener of this.#listeners) listener(key, ready)
      this.#metrics?.readyChanged([...this.#states.values()].filter(s => s.status === 'ready').length)
    }
  }

  /** Files in DATA_DIR that no configured entry explains are removed; configured ISOs and nmstatectl caches (binary, archive) stay. */
  async #cleanup (): Promise<void> {
    const keep = new Set<string>()
    for (const entry of this.entries) {
      keep.add(isoFileName(entry))
      keep.add(nmstatectlFileName(entry))
      keep.add(nmstateArchiveFileName(entry))
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
      const refused = this.#follower.refusal(key)
      if (refused !== undefined) { this.#setState(key, { status: 'refused', error: refused }); return }
    }
    for (let failures = 0; !this.#closed; failures++) {
      try {
        const image = await this.#preparer.prepare(group, key)
        if (this.#closed) { await closeImage(image); return }
        this.#setState(key, { status: 'ready', image })
        this.#log.info({ image: key }, 'OS image ready')
        return
      } catch (err) {
        if (this.#closed) return
        this.#metrics?.downloadFailed()
        if (isPermanentFailure(err) && this.#follower === undefined) {
          this.#log.error({ image: key, error: (err as Error).message }, 'OS image refused: it cannot be served as it is; the other images serve')
          this.#setState(key, { status: 'refused', error: (err as Error).message })
          return
        }
        const delay = backoffDelay(failures + 1, { baseMs: this.#timing.retryBaseMs, maxMs: this.#timing.retryMaxMs, jitter: 0.25 })
        this.#log.error({ image: key, error: (err as Error).message, retryInMs: Math.round(delay) }, 'OS image not ready, will retry')
        this.#setState(key, { status: 'failed', error: (err as Error).message, failures: failures + 1 })
        // A retry wait ends early on close; its abort listener is removed either way (no leak per retry).
        await sleep(delay, this.#abort.signal).catch(() => {})
      }
    }
  }

  #retire (image: PreparedImage): void {
    const timer = setTimeout(() => { this.#retired.delete(timer); void closeImage(image) }, this.#timing.retiredLingerMs)
    timer.unref()
    this.#retired.set(timer, image)
  }
}

async function closeImage (image: PreparedImage): Promise<void> {
  await image.iso.close()
  await image.pool.close()
}
