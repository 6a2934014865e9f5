import { open, type FileHandle } from 'node:fs/promises'
import type { ByteGate } from '../io/byte-gate.ts'
import type { MappedRegion, MemoryMapper } from './memory-map.ts'

export interface FilePoolOptions {
  /** Maps each file read-only, so responses send slices of the page cache; without it, files are read. */
  mapper?: MemoryMapper
  /** Told once per file whose mapping failed; that file is then read. */
  onMapFailure?: (path: string, err: Error) => void
  /** Map every page of a mapped file into the process ahead of the first response (default true). */
  prefault?: boolean
}

/**
 * A base file, open (and mapped, when the pool maps) from its first use until
 * the pool is closed and the last response using it has released it. A
 * mapping is never unmapped under a response: its slices may still sit in a
 * socket's queue.
 */
export class OpenFile {
  readonly path: string
  readonly handle: FileHandle
  readonly size: number
  /** The file's bytes in memory, or undefined where it is read instead. */
  readonly region: MappedRegion | undefined
  /** Set when the file's bytes may be absent until fetched (a block cache): a writer asks it before each chunk. */
  readonly gate: ByteGate | undefined
  #users = 0
  #closing = false
  #closed: Promise<void> | undefined

  constructor (path: string, handle: FileHandle, size: number, region: MappedRegion | undefined, gate?: ByteGate) {
    this.path = path
    this.handle = handle
    this.size = size
    this.region = region
    this.gate = gate
  }

  get users (): number { return this.#users }

  /** Whether the file closes once its last user releases it. */
  get closing (): boolean { return this.#closing }

  retain (): this {
    if (this.#closing) throw new Error(`${this.path} is closing`)
    this.#users++
    return this
  }

  release (): void {
    if (this.#users === 0) throw new Error(`${this.path} released more often than retained`)
    this.#users--
    if (this.#closing && this.#users === 0) this.#close()
  }

  /** Closes now if nobody uses the file, else when the last user releases it. */
  closeWhenUnused (): Promise<void> {
    if (this.#closed === undefined) {
      this.#closing = true
      this.#closed = new Promise(resolve => { this.#resolveClosed = resolve })
      if (this.#users === 0) this.#close()
    }
    return this.#closed
  }

  #resolveClosed: (() => void) | undefined

  #close (): void {
    this.region?.unmap()
    liveFiles--
    void this.handle.close().catch(() => {}).then(() => this.#resolveClosed?.())
  }
}

let liveFiles = 0
/** Base files open in this process, across every pool (tests check that none leak). */
export function openFileCount (): number { return liveFiles }

/**
 * Opens each base file once and shares it among every image built on it,
 * until `close()`: the image store closes a pool when its image leaves.
 */
export class FilePool {
  readonly #files = new Map<string, Promise<OpenFile>>()
  readonly #contentIds = new Map<string, string>()
  readonly #gates = new Map<string, ByteGate>()
  readonly #mapper: MemoryMapper | undefined
  readonly #onMapFailure: ((path: string, err: Error) => void) | undefined
  readonly #prefault: boolean
  #closed = false

  constructor (options: FilePoolOptions = {}) {
    this.#mapper = options.mapper
    this.#onMapFailure = options.onMapFailure
    this.#prefault = options.prefault ?? true
  }

  /**
   * Names a file by its content (a sha256) rather than by where it lies: ETags
   * of images built on it then match on every replica that has the same bytes.
   */
  identify (path: string, contentId: string): void {
    this.#contentIds.set(path, contentId)
  }

  contentId (path: string): string | undefined {
    return this.#contentIds.get(path)
  }

  /** Says that the file at `path` is a block cache: its bytes are asked of `gate` before they are read. */
  gate (path: string, gate: ByteGate): void {
    if (this.#files.has(path)) throw new Error(`${path} is open already: its gate comes first`)
    this.#gates.set(path, gate)
  }

  gateOf (path: string): ByteGate | undefined {
    return this.#gates.get(path)
  }

  /** The open file at `path`, retained: call `release()` once nothing refers to its bytes any more. */
  async retain (path: string): Promise<OpenFile> {
    if (this.#closed) throw new Error(`file pool closed: ${path} is no longer served`)
    let file = this.#files.get(path)
    if (file === undefined) {
      file = this.#open(path)
      file.catch(() => this.#files.delete(path))
      this.#files.set(path, file)
    }
    return (await file).retain()
  }

  /**
   * Opens `path` now, and only if it is still the file `expected` describes:
   * an image planned from one file must never be served from its replacement.
   */
  async openExpected (path: string, expected: { ino: number, dev: number, size: number }): Promise<void> {
    if (this.#files.has(path)) throw new Error(`${path} is already open`)
    const file = this.#open(path, expected)
    file.catch(() => this.#files.delete(path))
    this.#files.set(path, file)
    await file
  }

  async #open (path: string, expected?: { ino: number, dev: number, size: number }): Promise<OpenFile> {
    const handle = await open(path, 'r')
    let region: MappedRegion | undefined
    let size: number
    try {
      const info = await handle.stat()
      if (expected !== undefined && (info.ino !== expected.ino || info.dev !== expected.dev || info.size !== expected.size)) {
        throw new Error(`${path} was replaced while it was being prepared`)
      }
      size = info.size
      if (this.#mapper !== undefined) {
        try {
          region = this.#mapper.map(handle.fd, size)
        } catch (err) {
          this.#onMapFailure?.(path, err as Error)
        }
      }
    } catch (err) {
      await handle.close()
      throw err
    }
    liveFiles++
    const gate = this.#gates.get(path)
    const file = new OpenFile(path, handle, size, region, gate)
    // A block cache's holes would fault in as page-cache zeros: its pages come in as blocks arrive.
    if (region !== undefined && this.#prefault && gate === undefined) void prefault(file)
    return file
  }

  /** Responses holding a file of this pool right now (after `close()` too, until they finish). */
  async users (): Promise<number> {
    const files = await Promise.all([...this.#files.values()].map(f => f.catch(() => undefined)))
    return files.reduce((n, f) => n + (f?.users ?? 0), 0)
  }

  /** Stops handing out files; resolves once each is closed (after the responses still using it). */
  async close (): Promise<void> {
    this.#closed = true
    const files = [...this.#files.values()]
    await Promise.all(files.map(async f => { await (await f.catch(() => undefined))?.closeWhenUnused() }))
  }
}

const PREFAULT_STEP = 64 << 20

/**
 * Maps every page of a newly mapped file into the process ahead of the first
 * response, on a worker thread and a step at a time. Sockets copying from pages
 * the process has not touched yet fault them in as they go, on the event loop:
 * in a probe that cost up to a fifth of single-stream throughput. Pages evicted
 * later simply fault again (and are checked for residency first).
 */
async function prefault (file: OpenFile): Promise<void> {
  try {
    for (let offset = 0; offset < file.size && !file.closing; offset += PREFAULT_STEP) {
      await file.region!.populate(offset, Math.min(PREFAULT_STEP, file.size - offset))
    }
  } catch { /* older kernels: responses fault pages in as they go */ }
}
