import { open, type FileHandle } from 'node:fs/promises'
import { FilesystemError } from '../errors.ts'
import type { ByteGate } from '../io/byte-gate.ts'
import { readFully } from '../io/read-fully.ts'
import { BoundedCache } from '../io/bounded-cache.ts'

const PAGE = 4096
const CACHE_PAGES = 256
const SMALL_READ = 4 * PAGE

/**
 * Positional reads over `[base, base + length)` of one file: a filesystem image
 * that starts inside rootfs.img, itself inside the ISO. Small reads (metadata)
 * go through a bounded page cache; large ones (file data) go straight through.
 */
export class ByteSource {
  readonly length: number
  readonly #handle: FileHandle
  readonly #base: number
  readonly #owned: boolean
  readonly #gate: ByteGate | undefined
  readonly #pages = new BoundedCache<number, Buffer>({ maxEntries: CACHE_PAGES })

  constructor (handle: FileHandle, base: number, length: number, owned = false, gate?: ByteGate) {
    this.#handle = handle
    this.#gate = gate
    this.#base = base
    this.length = length
    this.#owned = owned
  }

  /** `gate`: the file's bytes may be absent until fetched (a block cache), and are asked for first. */
  static async open (path: string, base = 0, length?: number, gate?: ByteGate): Promise<ByteSource> {
    const handle = await open(path, 'r')
    try {
      const size = (await handle.stat()).size
      if (base > size) throw new FilesystemError(`image offset ${base} is beyond the end of ${path}`)
      return new ByteSource(handle, base, Math.min(length ?? size - base, size - base), true, gate)
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  /** Exactly `length` bytes at `offset`, or a FilesystemError naming what was cut off. */
  async read (offset: number, length: number, what = 'data'): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new FilesystemError(`${what} at ${offset}+${length} lies outside the ${this.length}-byte image`)
    }
    if (length <= SMALL_READ) return await this.#cached(offset, length)
    return await this.#direct(offset, length)
  }

  async #direct (offset: number, length: number): Promise<Buffer> {
    return await readFully(this.#handle, length, this.#base + offset, at => new FilesystemError(`image ends at ${at - this.#base}, inside a read of ${length} bytes`), this.#gate)
  }

  async #cached (offset: number, length: number): Promise<Buffer> {
    const first = Math.floor(offset / PAGE)
    const last = Math.floor((offset + length - 1) / PAGE)
    if (length === 0) return Buffer.alloc(0)
    const pages: Buffer[] = []
    for (let p = first; p <= last; p++) pages.push(await this.#page(p))
    const joined = pages.length === 1 ? pages[0]! : Buffer.concat(pages)
    const start = offset - first * PAGE
    return joined.subarray(start, start + length)
  }

  async #page (index: number): Promise<Buffer> {
    const hit = this.#pages.get(index)
    if (hit !== undefined) return hit
    const start = index * PAGE
    const page = await this.#direct(start, Math.min(PAGE, this.length - start))
    this.#pages.set(index, page)
    return page
  }

  async close (): Promise<void> {
    this.#pages.clear()
    if (this.#owned) await this.#handle.close()
  }
}
