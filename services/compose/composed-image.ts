import { createHash } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { FilePool } from './file-pool.ts'
import { segmentLength, type Segment } from './segment.ts'
import { PatchOverlap } from '../errors.ts'

interface Placed { start: number, segment: Segment }

/**
 * An image made of ordered segments: ranges of files on disk, buffers we
 * computed, and zeros, each at its offset. Nothing is materialized: an
 * ImageWriter streams any byte range of it in constant memory.
 */
export class ComposedImage {
  readonly size: number
  /** Strong validator: changes whenever any byte of the image would change. */
  readonly etag: string
  readonly pool: FilePool
  readonly #placed: Placed[]
  readonly #patches: Array<[number, number]>

  private constructor (placed: Placed[], size: number, etag: string, pool: FilePool, patches: Array<[number, number]>) {
    this.#placed = placed
    this.size = size
    this.etag = etag
    this.pool = pool
    this.#patches = patches
  }

  /**
   * Builds an image. For the ETag, a file segment is identified by its content
   * id when the pool knows one, else by path, size, mtime and inode.
   */
  static async fromSegments (segments: readonly Segment[], pool = new FilePool()): Promise<ComposedImage> {
    const hash = createHash('sha256')
    const versions = new Map<string, string>()
    const placed: Placed[] = []
    let size = 0
    for (const segment of segments) {
      const length = segmentLength(segment)
      if (length === 0) continue
      if (segment.kind === 'file') {
        let version = versions.get(segment.path)
        if (version === undefined) {
          const s = await stat(segment.path, { bigint: true })
          if (BigInt(segment.offset + segment.length) > s.size) throw new RangeError(`segment past the end of ${segment.path}`)
          const contentId = pool.contentId(segment.path)
          version = contentId !== undefined ? `c\0${contentId}` : `f\0${segment.path}\0${s.size}:${s.mtimeNs}:${s.ino}:${s.dev}`
          versions.set(segment.path, version)
        }
        hash.update(`${version}\0${segment.offset}\0${length}\n`)
      } else if (segment.kind === 'buffer') {
        hash.update(`b\0${length}\0`).update(segment.data).update('\n')
      } else {
        hash.update(`z\0${length}\n`)
      }
      placed.push({ start: size, segment })
      size += length
    }
    return new ComposedImage(placed, size, `"${hash.digest('base64url').slice(0, 32)}"`, pool, [])
  }

  get segments (): Segment[] { return this.#placed.map(p => p.segment) }

  /**
   * A new image with `bytes` laid over `offset`, then zeros up to `length`
   * bytes (an embed area). The size never changes; patches may not overlap.
   */
  patch (offset: number, bytes: Buffer, length = bytes.length): ComposedImage {
    if (length < bytes.length) throw new RangeError(`patch of ${bytes.length} bytes does not fit ${length}`)
    const end = offset + length
    if (!Number.isInteger(offset) || offset < 0 || end > this.size) throw new RangeError(`patch ${offset}+${bytes.length} is outside the ${this.size}-byte image`)
    if (length === 0) return this
    for (const [s, e] of this.#patches) {
      if (offset < e && s < end) throw new PatchOverlap(`patch ${offset}..${end} overlaps an earlier patch ${s}..${e}`)
    }
    const placed: Placed[] = []
    for (const p of this.#placed) {
      const pEnd = p.start + segmentLength(p.segment)
      if (pEnd <= offset || p.start >= end) { placed.push(p); continue }
      if (p.start < offset) placed.push({ start: p.start, segment: slice(p.segment, 0, offset - p.start) })
      if (p.start <= offset) {
        if (bytes.length > 0) placed.push({ start: offset, segment: { kind: 'buffer', data: bytes } })
        if (length > bytes.length) placed.push({ start: offset + bytes.length, segment: { kind: 'zero', length: length - bytes.length } })
      }
      if (pEnd > end) placed.push({ start: end, segment: slice(p.segment, end - p.start, pEnd - end) })
    }
    const etag = `"${createHash('sha256').update(this.etag).update(`\0${offset}\0${length}\0`).update(bytes).digest('base64url').slice(0, 32)}"`
    return new ComposedImage(placed, this.size, etag, this.pool, [...this.#patches, [offset, end]])
  }

  /** A new image with these bytes appended (the PXE initrd's per-host tail). */
  append (tail: readonly Buffer[]): ComposedImage {
    const placed = [...this.#placed]
    const hash = createHash('sha256').update(this.etag)
    let size = this.size
    for (const data of tail) {
      if (data.length === 0) continue
      placed.push({ start: size, segment: { kind: 'buffer', data } })
      hash.update(`\0${data.length}\0`).update(data)
      size += data.length
    }
    return new ComposedImage(placed, size, `"${hash.digest('base64url').slice(0, 32)}"`, this.pool, this.#patches)
  }

  #indexAt (offset: number): number {
    let lo = 0
    let hi = this.#placed.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.#placed[mid]!.start <= offset) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  /**
   * Yields the pieces covering [start, end) as descriptors, without reading.
   * Callers turn them into bytes: buffers as they are, files by positional reads.
   */
  * pieces (start: number, end: number): Generator<Segment> {
    if (start >= end) return
    for (let i = this.#indexAt(start); i < this.#placed.length; i++) {
      const p = this.#placed[i]!
      if (p.start >= end) return
      const length = segmentLength(p.segment)
      const from = Math.max(start, p.start) - p.start
      const to = Math.min(end, p.start + length) - p.start
      yield slice(p.segment, from, to - from)
    }
  }

  /** Throws a RangeError unless [start, end) is a range of this image. */
  checkRange (start: number, end: number): void {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > this.size || start > end) {
      throw new RangeError(`range ${start}..${end} is outside the ${this.size}-byte image`)
    }
  }
}

function slice (segment: Segment, from: number, length: number): Segment {
  switch (segment.kind) {
    case 'buffer': return { kind: 'buffer', data: segment.data.subarray(from, from + length) }
    case 'file': return { kind: 'file', path: segment.path, offset: segment.offset + from, length }
    case 'zero': return { kind: 'zero', length }
  }
}
