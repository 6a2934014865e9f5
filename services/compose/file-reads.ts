import type { FilePool, OpenFile } from './file-pool.ts'
import type { ReadBuffers } from './read-buffers.ts'

/** A file chunk read into a lent buffer; `release` gives the buffer back once the sink is done with it. */
export interface LentChunk { chunk: Buffer, release: () => void }

/**
 * Where one stream's file bytes come from: the files it retained from the
 * image's pool, read as slices of their memory map where the pool maps them
 * (see `faultIn`), else into buffers lent by `buffers`, at most two at a time
 * (one being read, one being sent).
 */
export class FileReads {
  readonly #pool: FilePool
  readonly #buffers: ReadBuffers
  readonly #files = new Map<string, OpenFile>()
  #lent = 0
  #bufferBack: (() => void) | undefined

  constructor (pool: FilePool, buffers: ReadBuffers) {
    this.#pool = pool
    this.#buffers = buffers
  }

  /** The file at `path`, retained until `release()`. */
  async file (path: string): Promise<OpenFile> {
    let file = this.#files.get(path)
    if (file === undefined) {
      file = await this.#pool.retain(path)
      this.#files.set(path, file)
    }
    return file
  }

  /** Reads up to `want` bytes at `position` into a lent buffer. */
  async readInto (file: OpenFile, position: number, want: number): Promise<LentChunk> {
    while (this.#lent >= 2) await new Promise<void>(resolve => { this.#bufferBack = resolve })
    const buffers = this.#buffers
    const buffer = buffers.take(want)
    this.#lent++
    const release = (): void => {
      buffers.give(buffer)
      this.#lent--
      const wake = this.#bufferBack
      this.#bufferBack = undefined
      wake?.()
    }
    let bytesRead: number
    try {
      ({ bytesRead } = await file.handle.read(buffer, 0, Math.min(want, buffer.length), position))
    } catch (err) {
      release()
      throw err
    }
    if (bytesRead === 0) { release(); throw new Error(`${file.path} ended early`) }
    return { chunk: buffer.subarray(0, bytesRead), release }
  }

  /** Releases every retained file: call once nothing refers to their bytes any more. */
  release (): void {
    for (const file of this.#files.values()) file.release()
    this.#files.clear()
  }
}

/**
 * Faults a range of a mapped file into the page cache on a worker thread, so
 * that the socket's copy does not block the event loop on disk. Where the
 * kernel cannot (before Linux 5.14), a read through the thread pool does it.
 */
export async function faultIn (file: OpenFile, position: number, length: number): Promise<void> {
  try {
    await file.region!.populate(position, length)
  } catch {
    for (let done = 0; done < length;) {
      const { bytesRead } = await file.handle.read(WARM_BUFFER, 0, Math.min(length - done, WARM_BUFFER.length), position + done)
      if (bytesRead === 0) return
      done += bytesRead
    }
  }
}

/** Where warming reads land: nobody reads it back, so concurrent reads may share it. */
const WARM_BUFFER = Buffer.allocUnsafeSlow(1 << 20)
