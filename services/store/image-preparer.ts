import { createHash, randomBytes } from 'node:crypto'
import { open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FilePool } from '../compose/file-pool.ts'
import type { MemoryMapper } from '../compose/memory-map.ts'
import { fileTemplate, type IsoKind, type IsoTemplate } from '../coreos/customize.ts'
import { buildMinimalTemplate } from '../coreos/minimal-template.ts'
import { findBootArtifacts, rangeImage, type BootArtifacts } from '../coreos/pxe.ts'
import { decDateTime } from '../iso9660/dates.ts'
import { IsoImage } from '../iso9660/reader.ts'
import type { ConcurrencyLimiter } from '../http/limiter.ts'
import { download } from './download.ts'
import type { PreparedImage, StoreConfig, StoreFollower, StoreLog, StoreMetrics, StoreTiming } from './store-types.ts'
import { extractNmstatectl, isNmstateArchiveOf, nmstateArchive } from './nmstate.ts'
import { contentIdFileName, isoFileName, needsNmstate, nmstateArchiveFileName, nmstatectlFileName, type OsImageEntry } from './os-image-entry.ts'
import { validateIso } from './validate.ts'

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
 * Turns a configured OS image into what the routes serve: the ISO in DATA_DIR
 * (downloaded atomically when missing, validated), its content hash, boot
 * artifacts, templates and nmstatectl. No state of its own beyond DATA_DIR:
 * the image store decides when to prepare and what to do on failure.
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
    let iso = await this.#openValid(path, key, !isFileUrl && this.#follower === undefined)
    if (iso === undefined) {
      if (isFileUrl) throw new Error(`${path} is missing`)
      if (this.#follower !== undefined) throw new Error(`${path} is missing; the primary process downloads it`)
      await this.#download(group, key, path)
      iso = await this.#openValid(path, key, false)
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
    const release = await this.#downloads.acquire(this.#signal)
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
        signal: this.#signal,
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
    // Hashing a multi-GB file is CPU work a serving process must not do: the primary hashes, then says ready.
    if (this.#follower !== undefined) throw new Error(`${iso.identity.path} has no content hash from the primary yet`)
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
   * The nmstatectl archive for an entry that needs it. A failure does not fail
   * the image: everything else of it serves, and requests that need nmstate
   * get the reason (logged once, by the process that extracts).
   */
  async #nmstate (group: OsImageEntry, key: string, artifacts: BootArtifacts): Promise<{ nmstate?: Buffer, nmstateError?: string }> {
    const found = this.#follower === undefined ? await this.#nmstatectl(group, key, artifacts) : await this.#leadersNmstatectl(group, key)
    if (found.binary === undefined) return { nmstateError: found.error }
    return { nmstate: await this.#archive(group, key, found.binary) }
  }

  /** nmstatectl from the DATA_DIR cache, else extracted from the ISO's rootfs and cached. */
  async #nmstatectl (group: OsImageEntry, key: string, artifacts: BootArtifacts): Promise<Nmstatectl> {
    const cache = join(this.#config.dataDir, nmstatectlFileName(group))
    const binary = await readFile(cache).catch(() => undefined)
    if (binary !== undefined && isElf(binary)) return { binary }
    if (binary !== undefined) this.#log.warn({ image: key, file: cache }, 'the cached nmstatectl is not an ELF binary; extracting it again')
    try {
      if (artifacts.rootfs === undefined) throw new Error('the ISO has no images/pxeboot/rootfs.img')
      const started = performance.now()
      const extracted = await extractNmstatectl(artifacts.rootfs)
      await writeAtomically(cache, extracted)
      this.#log.info({ image: key, bytes: extracted.length, ms: Math.round(performance.now() - started) }, 'nmstatectl extracted from the live rootfs')
      return { binary: extracted }
    } catch (err) {
      const reason = (err as Error).message
      this.#log.error({ image: key, error: reason }, 'nmstatectl not found: minimal ISOs and PXE initrds with static networking will fail for this image')
      return { error: reason }
    }
  }

  /**
   * In a worker: the binary the primary cached before it said the image is
   * ready. Searching a rootfs is CPU work no serving process should do, so a
   * missing one stays missing, for the primary's reason.
   */
  async #leadersNmstatectl (group: OsImageEntry, key: string): Promise<Nmstatectl> {
    const binary = await readFile(join(this.#config.dataDir, nmstatectlFileName(group))).catch(() => undefined)
    if (binary !== undefined && isElf(binary)) return { binary }
    const leaders = this.#follower?.nmstateError(key)
    if (leaders !== undefined) return { error: leaders }
    this.#log.warn({ image: key, file: nmstatectlFileName(group) }, 'the primary process left no nmstatectl in DATA_DIR')
    return { error: 'the primary process left no nmstatectl in DATA_DIR' }
  }

  /**
   * The gzip cpio of the binary, from DATA_DIR when it holds exactly that
   * binary; else compressed on the thread pool (never on a serving event
   * loop) and, by the primary, saved there for the workers.
   */
  async #archive (group: OsImageEntry, key: string, binary: Buffer): Promise<Buffer> {
    const cache = join(this.#config.dataDir, nmstateArchiveFileName(group))
    const cached = await readFile(cache).catch(() => undefined)
    if (cached !== undefined && await isNmstateArchiveOf(cached, binary)) return cached
    const started = performance.now()
    const archive = await nmstateArchive(binary)
    this.#log.info({ image: key, bytes: archive.length, ms: Math.round(performance.now() - started) }, 'nmstatectl archive compressed')
    if (this.#follower === undefined) {
      // Without it the workers compress their own, off their event loops too.
      await writeAtomically(cache, archive).catch((err: unknown) => this.#log.warn({ image: key, file: cache, error: (err as Error).message }, 'cannot cache the nmstatectl archive'))
    }
    return archive
  }
}

/** The binary, or why there is none. */
type Nmstatectl = { binary: Buffer, error?: never } | { binary?: never, error: string }

function isElf (data: Buffer): boolean {
  return data.length > 4 && data.readUInt32BE(0) === 0x7f454c46
}

async function writeAtomically (path: string, data: Buffer): Promise<void> {
  const temp = `${path}.${randomBytes(4).toString('hex')}.part`
  try {
    await writeFile(temp, data)
    await rename(temp, path)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}

async function syncDirectory (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try { await fh.sync() } catch { /* not every filesystem syncs directories */ } finally { await fh.close() }
}
