import { open, readFile, type FileHandle } from 'node:fs/promises'
import { writeAtomically } from '../io/atomic-write.ts'

/** What a cache file holds blocks of: a record describing another file, or another version, is no record of this one. */
export interface RecordHeader {
  size: number
  blockSize: number
  /** The origin's validator when the first block was fetched. */
  validator: string
  /** What names the image's bytes in ETags (the entry's sha256, else derived from the validator and size). */
  contentId: string
}

/** The header's JSON sits in the first 4 KiB, padded; one bit per block follows. */
const BITMAP_OFFSET = 4096

/**
 * Which blocks of a cache file are present, kept beside it so that it survives
 * a restart. A bit is set only after its block's bytes were written and
 * synced, and cleared (and synced) before they are punched out, so a set bit
 * never stands for a hole. Writes of the bitmap go one after the other, each
 * carrying the bits as they are when it runs: the last write is the truth.
 */
export class BlockRecord {
  readonly header: RecordHeader
  readonly blocks: number
  readonly #bits: Uint8Array
  readonly #handle: FileHandle
  #present = 0
  #writing: Promise<void> = Promise.resolve()

  private constructor (header: RecordHeader, handle: FileHandle, bits: Uint8Array) {
    this.header = header
    this.#handle = handle
    this.#bits = bits
    this.blocks = Math.ceil(header.size / header.blockSize)
    for (let i = 0; i < this.blocks; i++) if (this.has(i)) this.#present++
  }

  /** The header a record file holds, or undefined when there is none or it is unreadable. */
  static async readHeader (path: string): Promise<RecordHeader | undefined> {
    const text = await readFile(path).then(bytes => bytes.subarray(0, BITMAP_OFFSET).toString('utf8').trimEnd()).catch(() => undefined)
    if (text === undefined) return undefined
    try {
      const header = JSON.parse(text) as Partial<RecordHeader>
      if (typeof header.size !== 'number' || typeof header.blockSize !== 'number' || typeof header.validator !== 'string' ||
        typeof header.contentId !== 'string' || header.size <= 0 || header.blockSize <= 0) return undefined
      return { size: header.size, blockSize: header.blockSize, validator: header.validator, contentId: header.contentId }
    } catch {
      return undefined
    }
  }

  /**
   * The record at `path` when it describes `header`'s file; otherwise a new,
   * empty one is written in its place (`fresh` tells which).
   */
  static async open (path: string, header: RecordHeader): Promise<{ record: BlockRecord, fresh: boolean }> {
    const blocks = Math.ceil(header.size / header.blockSize)
    const existing = await BlockRecord.readHeader(path)
    const fresh = existing === undefined || JSON.stringify(existing) !== JSON.stringify(header)
    if (fresh) {
      const head = Buffer.alloc(BITMAP_OFFSET, ' ')
      head.write(JSON.stringify(header))
      head[BITMAP_OFFSET - 1] = 0x0a
      await writeAtomically(path, Buffer.concat([head, Buffer.alloc(Math.ceil(blocks / 8))]))
    }
    const handle = await open(path, 'r+')
    try {
      const bits = new Uint8Array(Math.ceil(blocks / 8))
      const { bytesRead } = await handle.read(bits, 0, bits.length, BITMAP_OFFSET)
      if (bytesRead !== bits.length) bits.fill(0)
      return { record: new BlockRecord(header, handle, bits), fresh }
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  has (block: number): boolean { return (this.#bits[block >> 3]! & (1 << (block & 7))) !== 0 }

  get presentBlocks (): number { return this.#present }
  get complete (): boolean { return this.#present === this.blocks }

  /** Records blocks whose bytes are written and synced. */
  async markPresent (blocks: readonly number[]): Promise<void> {
    for (const block of blocks) {
      if (this.has(block)) continue
      this.#bits[block >> 3]! |= 1 << (block & 7)
      this.#present++
    }
    await this.#write(blocks, false)
  }

  /** Forgets blocks, durably, before their bytes are punched out. */
  async markAbsent (blocks: readonly number[]): Promise<void> {
    for (const block of blocks) {
      if (!this.has(block)) continue
      this.#bits[block >> 3]! &= ~(1 << (block & 7))
      this.#present--
    }
    await this.#write(blocks, true)
  }

  #write (blocks: readonly number[], sync: boolean): Promise<void> {
    const bytes = [...new Set(blocks.map(block => block >> 3))]
    const write = async (): Promise<void> => {
      for (const at of bytes) await this.#handle.write(this.#bits, at, 1, BITMAP_OFFSET + at)
      if (sync) await this.#handle.datasync()
    }
    const done = this.#writing.then(write)
    this.#writing = done.catch(() => {})
    return done
  }

  async close (): Promise<void> {
    await this.#writing
    await this.#handle.close()
  }
}
