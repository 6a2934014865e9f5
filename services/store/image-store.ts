import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ComposedImage, FilePool } from '../compose/composed-image.ts'
import { fileTemplate, type IsoKind, type IsoTemplate } from '../coreos/customize.ts'
import { filesArchive } from '../coreos/ignition-archive.ts'
import { buildMinimalTemplate } from '../coreos/minimal-template.ts'
import { findBootArtifacts, rangeImage, type BootArtifacts } from '../coreos/pxe.ts'
import { decDateTime } from '../iso9660/dates.ts'
import { IsoImage } from '../iso9660/reader.ts'
import { ConcurrencyLimiter } from '../limiter.ts'
import { download, sleep, type DownloadLog } from './download.ts'
import { extractNmstatectl } from './nmstate.ts'
import {
  compareOpenshiftVersions, contentIdFileName, deduplicateEntries, entryKey, findEntry, isoFileName, nmstatectlFileName, type OsImageEntry, type OsImageType
} from './os-image-entry.ts'
import { validateIso } from './validate.ts'

export const NMSTATE_MIN_OPENSHIFT = '4.18.0-ec.0'

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
  readonly #downloads: ConcurrencyLimiter
  readonly #follower: StoreFollower | undefined
  #tasks: Array<Promise<void>> = []
  #closed = false

  constructor (options: { config: StoreConfig, log: StoreLog, metrics?: StoreMetrics, timing?: Partial<StoreTiming>, follower?: StoreFollower }) {
    this.#follower = options.follower
    this.#config = options.config
    this.#log = options.log
    this.#metrics = options.metrics
    this.#timing = { ...DEFAULT_TIMING, ...options.timing }
    this.#downloads = new ConcurrencyLimiter(this.#timing.parallelDownloads, 0)
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

  isoPath (entry: OsImageEntry): string {
    const url = new URL(entry.url)
    return url.protocol === 'file:' ? fileURLToPath(url) : join(this.#config.dataDir, isoFileName(entry))
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
        const image = await this.#prepare(group, key)
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

  async #prepare (group: OsImageEntry, key: string): Promise<PreparedImage> {
    const path = this.isoPath(group)
    const isFileUrl = new URL(group.url).protocol === 'file:'
    let iso = await this.#openValid(path, key, !isFileUrl && this.#follower === undefined)
    if (iso === undefined) {
      if (isFileUrl) throw new Error(`${path} is missing`)
      if (this.#follower !== undefined) throw new Error(`${path} is missing; the primary process downloads it`)
      await this.#download(group, key, path)
      iso = await this.#openValid(path, key, false)
      if (iso === undefined) throw new Error('downloaded file vanished')
    }
    const pool = new FilePool()
    try {
      // Content, not location, names the ISO: every replica then gives the same ETags.
      pool.identify(path, await this.#contentId(group, key, iso))
      const artifacts = await findBootArtifacts(iso)
      const { nmstate, nmstateError } = needsNmstate(group) ? await this.#nmstate(group, key, artifacts) : {}
      const templates: Partial<Record<IsoKind, IsoTemplate>> = {}
      templates[group.type] = await fileTemplate(iso, group.type, group.cpuArchitecture, pool)
      if (group.type === 'full-iso' && group.cpuArchitecture !== 's390x') {
        const rootfsUrl = `${this.#config.imageServiceBaseUrl}/boot-artifacts/rootfs?arch=${encodeURIComponent(group.cpuArchitecture)}&version=${encodeURIComponent(group.version)}`
        templates['minimal-iso'] = await buildMinimalTemplate(iso, { arch: group.cpuArchitecture, rootfsUrl, ...(nmstate !== undefined ? { nmstate } : {}) }, pool)
      }
      const initrd = artifacts.initrd !== undefined ? await rangeImage(artifacts.initrd, pool) : undefined
      const artifactImages: PreparedImage['artifactImages'] = {}
      if (artifacts.rootfs !== undefined) artifactImages.rootfs = await rangeImage(artifacts.rootfs, pool)
      if (artifacts.kernel !== undefined) artifactImages.kernel = await rangeImage(artifacts.kernel, pool)
      if (artifacts.insFile !== undefined) artifactImages['ins-file'] = await rangeImage(artifacts.insFile, pool)
      return {
        entry: group,
        key,
        isoPath: path,
        iso,
        templates,
        artifacts,
        ...(initrd !== undefined ? { initrd } : {}),
        artifactImages,
        ...(nmstate !== undefined ? { nmstate } : {}),
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

  /** Opens and validates an existing file; an invalid one is deleted (when ours) so it is downloaded again. */
  async #openValid (path: string, key: string, deleteInvalid: boolean): Promise<IsoImage | undefined> {
    let iso: IsoImage
    try {
      iso = await IsoImage.open(path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      if (!deleteInvalid) throw err
      this.#log.warn({ image: key, error: (err as Error).message }, 'existing OS image is unreadable, downloading it again')
      await unlink(path).catch(() => {})
      return undefined
    }
    try {
      validateIso(iso)
      return iso
    } catch (err) {
      await iso.close()
      if (!deleteInvalid) throw err
      this.#log.warn({ image: key, error: (err as Error).message }, 'existing OS image is invalid, downloading it again')
      await unlink(path).catch(() => {})
      return undefined
    }
  }

  async #download (group: OsImageEntry, key: string, finalPath: string): Promise<void> {
    const release = await this.#downloads.acquire(this.#abort.signal)
    const temp = join(this.#config.dataTempDir, `${isoFileName(group)}.${randomBytes(4).toString('hex')}.part`)
    try {
      this.#log.info({ image: key }, 'downloading OS image')
      const started = Date.now()
      const { size, sha256 } = await download(group.url, temp, {
        headers: this.#config.osImagesRequestHeaders,
        query: this.#config.osImagesRequestQueryParams,
        ...(this.#config.osImageDownloadCaFile !== undefined ? { caFile: this.#config.osImageDownloadCaFile } : {}),
        insecureSkipVerify: this.#config.insecureSkipVerify,
        proxy: this.#config.proxy,
        attempts: this.#timing.downloadAttempts,
        backoffMs: this.#timing.downloadBackoffMs,
        progressIntervalMs: this.#timing.progressIntervalMs,
        log: this.#log,
        label: key,
        signal: this.#abort.signal,
        onBytes: n => this.#metrics?.downloadedBytes(n)
      })
      if (group.sha256 !== undefined && sha256 !== group.sha256) {
        throw new Error(`sha256 mismatch: expected ${group.sha256}, got ${sha256}`)
      }
      const check = await IsoImage.open(temp)
      try { validateIso(check) } finally { await check.close() }
      await rename(temp, finalPath)
      await this.#saveContentId(group, finalPath, sha256)
      await syncDirectory(this.#config.dataDir)
      this.#log.info({ image: key, bytes: size, seconds: Math.round((Date.now() - started) / 100) / 10 }, 'OS image downloaded')
    } finally {
      release()
      await unlink(temp).catch(() => {})
    }
  }

  /**
   * The ISO's sha256, from its sidecar in DATA_DIR when that still describes
   * the file (same size and mtime), else computed once and saved there.
   */
  async #contentId (group: OsImageEntry, key: string, iso: IsoImage): Promise<string> {
    const sidecar = join(this.#config.dataDir, contentIdFileName(group))
    const { size, mtimeMs } = iso.identity
    const saved = await readFile(sidecar, 'utf8').then(text => JSON.parse(text) as { sha256?: unknown, size?: unknown, mtimeMs?: unknown }, () => undefined)
    if (saved !== undefined && typeof saved.sha256 === 'string' && /^[0-9a-f]{64}$/.test(saved.sha256) && saved.size === size && saved.mtimeMs === mtimeMs) {
      return saved.sha256
    }
    const started = performance.now()
    const hash = createHash('sha256')
    const fh = await open(iso.identity.path, 'r')
    try {
      const buffer = Buffer.allocUnsafe(4 << 20)
      for (let offset = 0; offset < size;) {
        const { bytesRead } = await fh.read(buffer, 0, Math.min(buffer.length, size - offset), offset)
        if (bytesRead === 0) throw new Error(`${iso.identity.path} ended early`)
        hash.update(buffer.subarray(0, bytesRead))
        offset += bytesRead
      }
    } finally {
      await fh.close()
    }
    const sha256 = hash.digest('hex')
    this.#log.info({ image: key, ms: Math.round(performance.now() - started) }, 'OS image content hashed')
    await this.#saveContentId(group, iso.identity.path, sha256)
    return sha256
  }

  async #saveContentId (group: OsImageEntry, isoPath: string, sha256: string): Promise<void> {
    const { size, mtimeMs } = await stat(isoPath)
    const sidecar = join(this.#config.dataDir, contentIdFileName(group))
    const temp = `${sidecar}.${randomBytes(4).toString('hex')}.part`
    await writeFile(temp, JSON.stringify({ sha256, size, mtimeMs }))
    await rename(temp, sidecar).catch(async (err: unknown) => { await unlink(temp).catch(() => {}); throw err })
  }

  /**
   * nmstatectl for an entry that needs it, from the DATA_DIR cache or the ISO's
   * rootfs. A failure does not fail the image: everything else of it serves,
   * and requests that need nmstate get the reason (logged here once).
   */
  async #nmstate (group: OsImageEntry, key: string, artifacts: BootArtifacts): Promise<{ nmstate?: Buffer, nmstateError?: string }> {
    const cache = join(this.#config.dataDir, nmstatectlFileName(group))
    let binary: Buffer | undefined = await readFile(cache).catch(() => undefined)
    if (binary !== undefined && !isElf(binary)) {
      this.#log.warn({ image: key, file: cache }, 'the cached nmstatectl is not an ELF binary; extracting it again')
      binary = undefined
    }
    if (binary === undefined) {
      try {
        if (artifacts.rootfs === undefined) throw new Error('the ISO has no images/pxeboot/rootfs.img')
        const started = performance.now()
        const extracted = await extractNmstatectl(artifacts.rootfs)
        const temp = `${cache}.${randomBytes(4).toString('hex')}.part`
        await writeFile(temp, extracted, { mode: 0o644 })
        await rename(temp, cache)
        binary = extracted
        this.#log.info({ image: key, bytes: extracted.length, ms: Math.round(performance.now() - started) }, 'nmstatectl extracted from the live rootfs')
      } catch (err) {
        const reason = (err as Error).message
        this.#log.error({ image: key, error: reason }, 'nmstatectl not found: minimal ISOs and PXE initrds with static networking will fail for this image')
        return { nmstateError: reason }
      }
    }
    return { nmstate: filesArchive([{ name: 'usr/bin/nmstatectl', mode: 0o100755, data: binary }]) }
  }
}

function isElf (data: Buffer): boolean {
  return data.length > 4 && data.readUInt32BE(0) === 0x7f454c46
}

/** OpenShift 4.18 and later configure static networking with nmstatectl from the initrd (disconnected ISOs excepted). */
export function needsNmstate (entry: Pick<OsImageEntry, 'openshiftVersion' | 'type'>): boolean {
  return entry.type !== 'disconnected-iso' && compareOpenshiftVersions(entry.openshiftVersion, NMSTATE_MIN_OPENSHIFT) >= 0
}

async function syncDirectory (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try { await fh.sync() } catch { /* not every filesystem syncs directories */ } finally { await fh.close() }
}
