import { mkdir, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { MemoryMapper } from '../compose/memory-map.ts'
import { DomainError, OriginChanged } from '../errors.ts'
import { syncDirectory } from '../io/atomic-write.ts'
import { fileSha256 } from '../io/file-hash.ts'
import { ConcurrencyLimiter } from '../http/limiter.ts'
import { backoffDelay, sleep } from '../io/backoff.ts'
import { loadHolePuncher, type HolePuncher } from '../io/hole-punch.ts'
import type { CacheMetrics } from '../origin/block-cache.ts'
import { CacheBudget } from '../origin/cache-budget.ts'
import type { PreparedImage, StoreConfig, StoreFollower, StoreLog, StoreMetrics, StoreTiming } from './store-types.ts'
import { ImagePreparer } from './image-preparer.ts'
import { saveContentId } from './content-id.ts'
import { cacheFiles, FollowerSource, LeaderSource, wholeIsoPath, type ImageSource } from './image-source.ts'
import { CacheFiller } from './cache-filler.ts'
import { contentIdFileName, deduplicateEntries, entryKey, findEntry, type OsImageEntry, type OsImageType } from './os-image-entry.ts'

const DEFAULT_TIMING: StoreTiming = {
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
 * What gives a block cache's disk back, when the platform has it (Linux with
 * koffi); without it a cache budget cannot be kept, which is said once.
 */
export async function cachePuncher (config: Pick<StoreConfig, 'osImagesCacheMaxBytes'>, log: StoreLog): Promise<{ punch?: HolePuncher }> {
  try {
    return { punch: await loadHolePuncher() }
  } catch (err) {
    if (config.osImagesCacheMaxBytes !== undefined) {
      log.error({ error: (err as Error).message }, 'blocks cannot be evicted here: OS_IMAGES_CACHE_MAX_BYTES cannot be kept')
    }
    return {}
  }
}

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
  readonly #source: ImageSource
  readonly #preparer: ImagePreparer
  #tasks: Array<Promise<void>> = []
  #closed = false
  #identityTimer: NodeJS.Timeout | undefined
  #checking: Promise<void> | undefined
  /** Replaced images, until their linger ends. */
  readonly #retired = new Map<NodeJS.Timeout, PreparedImage>()
  /** A replacement file that failed to prepare, by image: not tried again until it changes. */
  readonly #failedReplacements = new Map<string, string>()
  /** Images whose origin changed under their block cache: prepared again on the next check. */
  readonly #changedAtOrigin = new Set<string>()
  readonly #budget: CacheBudget
  readonly #filler: CacheFiller | undefined

  constructor (options: {
    config: StoreConfig
    log: StoreLog
    metrics?: StoreMetrics
    timing?: Partial<StoreTiming>
    follower?: StoreFollower
    /** The other processes reading the leader's block caches: which blocks they hold (never evicted). */
    heldElsewhere?: (key: string, inode: number, blocks: number[]) => Promise<number[]>
    cacheMetrics?: CacheMetrics
    /** Gives evicted blocks' disk back; without it a cache budget cannot be kept. */
    punch?: HolePuncher
    /** Maps the image files responses stream from; unset: they are read. */
    mapper?: MemoryMapper
  }) {
    this.#config = options.config
    this.#log = options.log
    this.#metrics = options.metrics
    this.#timing = { ...DEFAULT_TIMING, ...options.timing }
    this.#budget = new CacheBudget(this.#config.osImagesCacheMaxBytes ?? Infinity)
    const parallel = this.#config.osImagesParallelDownloads ?? 2
    // The role is decided here, once: the store, the preparer and everything below them ask the source.
    this.#source = options.follower !== undefined
      ? new FollowerSource(this.#config, this.#log, options.follower)
      : new LeaderSource({
        config: this.#config,
        log: this.#log,
        metrics: this.#metrics,
        cacheMetrics: options.cacheMetrics,
        timing: this.#timing,
        downloads: new ConcurrencyLimiter(parallel, 0),
        budget: this.#budget,
        punch: options.punch,
        heldElsewhere: options.heldElsewhere,
        onOriginChanged: key => { this.#changedAtOrigin.add(key); void this.checkReplaced() },
        signal: this.#abort.signal
      })
    this.#preparer = new ImagePreparer({ config: this.#config, log: this.#log, source: this.#source, mapper: options.mapper })
    this.#filler = this.#source.decides && (this.#config.osImagesFetch ?? 'lazy') === 'lazy'
      ? new CacheFiller({
        parallel,
        budget: this.#budget,
        log: this.#log,
        signal: this.#abort.signal,
        retryMs: this.#timing.retryBaseMs,
        images: () => this.keys.map(key => this.get(key)).filter((image): image is PreparedImage => image !== undefined),
        settled: () => this.#settled(),
        complete: async image => await this.#completed(image)
      })
      : undefined
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

  #settled (): boolean {
    return [...this.#states.values()].every(s => s.status === 'ready' || s.status === 'refused' || s.failures > 0)
  }

  /** Readies DATA_DIR for this process's role, then prepares every image in the background. */
  async start (): Promise<void> {
    this.#identityTimer = setInterval(() => { void this.checkReplaced() }, this.#timing.identityCheckMs)
    this.#identityTimer.unref()
    await mkdir(this.#config.dataDir, { recursive: true })
    await this.#source.start(this.entries)
    this.#tasks = this.groups.map(group => this.#prepareWithRetry(group))
    if (this.#filler !== undefined) this.#tasks.push(this.#filler.run())
  }

  /** What each ready image holds in DATA_DIR: its block cache's bytes, or its whole file's size. */
  cachedBytes (): Array<{ version: string, arch: string, bytes: number }> {
    return this.groups.flatMap(group => {
      const image = this.get(entryKey(group))
      if (image === undefined) return []
      return [{ version: group.version, arch: group.cpuArchitecture, bytes: image.blocks?.cachedBytes ?? image.iso.identity.size }]
    })
  }

  /** Bytes of every block cache together, and the budget they are kept in (Infinity: none). */
  get cacheUsage (): { bytes: number, maxBytes: number } {
    return { bytes: this.#budget.usedBytes, maxBytes: this.#budget.maxBytes }
  }

  /**
   * For another process reading the leader's block cache of `key` (the file
   * with `inode`): resolves once [offset, offset + length) is present, and has
   * `readAhead` more fetched. Rejects (a DomainError) when the bytes cannot be
   * had, or the cache is no longer the one that process reads.
   */
  async fetchFor (key: string, inode: number, offset: number, length: number, readAhead: number): Promise<void> {
    const blocks = this.get(key)?.blocks
    if (blocks === undefined || blocks.inode !== inode) throw new OriginChanged('the image was prepared again; read it anew')
    const release = await blocks.acquire(offset, length, readAhead)
    release()
  }

  /**
   * Every block of an image is cached: its bytes are checked against the
   * entry's sha256 (a mismatch refuses the image), and, with no cache budget
   * to keep, the file takes the image's upstream-compatible name, where a later
   * start finds it whole.
   */
  async #completed (image: PreparedImage): Promise<void> {
    const blocks = image.blocks!
    const key = image.key
    const started = performance.now()
    const sha256 = await fileSha256(blocks.path, blocks.size)
    if (image.entry.sha256 !== undefined && sha256 !== image.entry.sha256) {
      const error = `sha256 mismatch: expected ${image.entry.sha256}, got ${sha256}`
      this.#log.error({ image: key, error }, 'OS image refused: its bytes at the origin do not match the configured sha256')
      if (this.#states.get(key)?.status === 'ready') {
        this.#setState(key, { status: 'refused', error })
        this.#retire(image)
      }
      return
    }
    if (this.#budget.maxBytes !== Infinity) {
      this.#log.info({ image: key, seconds: Math.round((performance.now() - started) / 100) / 10 }, 'OS image cached whole; it stays a block cache the budget may evict from')
      return
    }
    const files = cacheFiles(this.#config, image.entry)
    const finalPath = wholeIsoPath(this.#config, image.entry)
    // The content id the image was served under stays its name, whatever the file is called.
    await saveContentId(join(this.#config.dataDir, contentIdFileName(image.entry)), blocks.path, blocks.contentId)
    blocks.finish()
    await rename(blocks.path, finalPath)
    await unlink(files.record).catch(() => {})
    await syncDirectory(this.#config.dataDir)
    this.#log.info({ image: key, bytes: blocks.size }, 'OS image complete; it stands under its upstream name')
  }

  /** Resolves when every image is ready or has failed at least once (for tests and startup logs). */
  async settled (): Promise<void> {
    while (!this.#settled()) {
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
    this.#filler?.wake()
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
      const changedAtOrigin = this.#changedAtOrigin.delete(key)
      const now = await stat(identity.path).catch(() => undefined)
      if (now === undefined && !changedAtOrigin) continue
      // A block cache is written as blocks arrive: its inode, not its mtime, says whether it is the same file.
      const same = now !== undefined && now.ino === identity.ino && now.dev === identity.dev && now.size === identity.size &&
        (now.mtimeMs === identity.mtimeMs || state.image.iso.gate !== undefined)
      if (same && !changedAtOrigin) continue
      if (now !== undefined && !changedAtOrigin && this.#failedReplacements.get(key) === `${now.ino}:${now.size}:${now.mtimeMs}`) continue
      this.#log.info({ image: key }, changedAtOrigin ? 'OS image changed at its origin; preparing it again' : 'OS image file replaced; preparing the new one')
      let image: PreparedImage
      try {
        image = await this.#preparer.prepare(state.image.entry, key)
      } catch (err) {
        if (!this.#source.decides) {
          // The leader checks the new file (and hashes it) on its own tick: this process tries again on its next.
          this.#log.info({ image: key, error: (err as Error).message }, 'the replaced OS image file is not ready here yet; serving the previous one')
          continue
        }
        if (changedAtOrigin) this.#changedAtOrigin.add(key)
        else if (now !== undefined) this.#failedReplacements.set(key, `${now.ino}:${now.size}:${now.mtimeMs}`)
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

  async #prepareWithRetry (group: OsImageEntry): Promise<void> {
    const key = entryKey(group)
    const refused = await this.#source.available(key, this.#abort.signal)
    if (refused !== undefined) { this.#setState(key, { status: 'refused', error: refused }); return }
    for (let failures = 0; !this.#closed; failures++) {
      try {
        const image = await this.#preparer.prepare(group, key)
        if (this.#closed) { await closeImage(image); return }
        this.#setState(key, { status: 'ready', image })
        this.#log.info({ image: key }, 'OS image ready')
        this.#filler?.wake()
        return
      } catch (err) {
        if (this.#closed) return
        this.#metrics?.downloadFailed()
        if (isPermanentFailure(err) && this.#source.decides) {
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
  await image.blocks?.close()
}
