import { createHash } from 'node:crypto'
import { open, stat, type FileHandle } from 'node:fs/promises'
import { Readable, type Writable } from 'node:stream'
import { segmentLength, type Segment } from './segment.ts'
import { PatchOverlap } from '../errors.ts'
import { readFully } from '../read-fully.ts'

export const CHUNK = 1 << 20

/** Opens each base file once and shares the handle among every image built on it. */
export class FilePool {
  readonly #handles = new Map<string, Promise<FileHandle>>()
  readonly #contentIds = new Map<string, string>()

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

  get (path: string): Promise<FileHandle> {
    let handle = this.#handles.get(path)
    if (handle === undefined) {
      handle = open(path, 'r')
      handle.catch(() => this.#handles.delete(path))
      this.#handles.set(path, handle)
    }
    return handle
  }

  async close (): Promise<void> {
    const handles = [...this.#handles.values()]
    this.#handles.clear()
    await Promise.all(handles.map(async h => { await (await h).close() }))
  }
}

interface Placed { start: number, segment: Segment }

/**
 * An image made of ordered segments: ranges of files on disk, buffers we
 * computed, and zeros. Nothing is materialized; any byte range streams with
 * backpressure in constant memory.
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

  /** A Readable of bytes [start, end) (end exclusive) with backpressure. */
  read (start = 0, end = this.size): Readable {
    checkRange(start, end, this.size)
    const pieces = this.pieces(start, end)
    let current: Segment | undefined
    let done = 0
    const pool = this.pool
    return new Readable({
      highWaterMark: CHUNK,
      // One chunk per call: Node calls read() again after each push, so looping here would race.
      async read () {
        try {
          while (current === undefined || done >= segmentLength(current)) {
            const next = pieces.next()
            if (next.done === true) { this.push(null); return }
            current = next.value
            done = 0
          }
          const chunk = await readPiece(pool, current, done, Math.min(CHUNK, segmentLength(current) - done))
          done += chunk.length
          if (!this.destroyed) this.push(chunk)
        } catch (err) {
          this.destroy(err as Error)
        }
      }
    })
  }

  /**
   * Writes [start, end) to `sink` with backpressure, reading file ranges into
   * reused buffers (a fresh multi-MiB allocation per chunk costs more than the
   * copy). Chunks grow while the sink keeps up and shrink when it stalls, so a
   * fast client gets large reads and a slow one holds little memory. Resolves
   * when the last byte is handed to the sink; rejects if the sink is destroyed.
   */
  async writeTo (sink: Writable, start = 0, end = this.size): Promise<void> {
    checkRange(start, end, this.size)
    // Start large: the shared budget, not the first chunk, is what bounds memory for stalled clients.
    const state: WriteState = { lent: new Set(), inFlight: 0, settled: undefined }
    try {
      await this.#writePieces(sink, start, end, state)
    } catch (err) {
      // A destroyed sink may never call back its pending writes (real sockets cancel them, other streams
      // need not): once it has closed, nothing it holds is sent any more, so its buffers go back to the pool.
      if (state.lent.size > 0 && sink.destroyed) {
        if (!sink.closed) await new Promise<void>(resolve => { sink.once('close', () => resolve()) })
        for (const release of [...state.lent]) release()
      }
      throw err
    }
  }

  async #writePieces (sink: Writable, start: number, end: number, state: WriteState): Promise<void> {
    let chunkSize = START_CHUNK
    for (const piece of this.pieces(start, end)) {
      const length = segmentLength(piece)
      for (let done = 0; done < length;) {
        if (sink.destroyed) throw new Error('sink closed')
        const want = Math.min(chunkSize, length - done)
        let chunk: Buffer
        let release: ((err?: Error | null) => void) | undefined
        if (piece.kind === 'file') {
          // At most two pooled buffers per stream: one being read, one being sent.
          while (state.inFlight >= 2) await new Promise<void>(resolve => { state.settled = resolve })
          const buffer = sharedBuffers.take(want)
          const size = Math.min(want, buffer.length)
          state.inFlight++
          let returned = false
          const give = (): void => {
            if (returned) return
            returned = true
            state.lent.delete(give)
            sharedBuffers.give(buffer)
            state.inFlight--
            const wake = state.settled
            state.settled = undefined
            wake?.()
          }
          state.lent.add(give)
          release = give
          const fh = await this.pool.get(piece.path)
          let bytesRead: number
          try {
            ({ bytesRead } = await fh.read(buffer, 0, size, piece.offset + done))
          } catch (err) {
            release()
            throw err
          }
          if (bytesRead === 0) { release(); throw new Error(`${piece.path} ended early`) }
          chunk = buffer.subarray(0, bytesRead)
        } else {
          chunk = await readPiece(this.pool, piece, done, want)
        }
        done += chunk.length
        if (sink.destroyed) { release?.(); throw new Error('sink closed') }
        if (!sink.write(chunk, release)) {
          const waitStarted = performance.now()
          await drained(sink)
          // A sink that drains at once can take bigger chunks; one that stalls gets smaller ones.
          chunkSize = performance.now() - waitStarted < FAST_DRAIN_MS ? Math.min(MAX_CHUNK, chunkSize * 2) : Math.max(MIN_CHUNK, chunkSize / 2)
        } else {
          chunkSize = Math.min(MAX_CHUNK, chunkSize * 2)
        }
      }
    }
    while (state.inFlight > 0) await new Promise<void>(resolve => { state.settled = resolve })
  }

  /**
   * Writes the whole image to `path`, leaving holes where it is zero (zero
   * segments and all-zero chunks), so multi-GB images with sparse payloads
   * cost little disk. Not atomic: write to a temporary name and rename.
   */
  async saveSparse (path: string): Promise<void> {
    const out = await open(path, 'w')
    try {
      let position = 0
      for (const piece of this.pieces(0, this.size)) {
        const length = segmentLength(piece)
        if (piece.kind === 'buffer') {
          await out.write(piece.data, 0, piece.data.length, position)
        } else if (piece.kind === 'file') {
          for (let done = 0; done < length;) {
            const chunk = await readPiece(this.pool, piece, done, Math.min(CHUNK, length - done))
            if (!chunk.every(b => b === 0)) await out.write(chunk, 0, chunk.length, position + done)
            done += chunk.length
          }
        }
        position += length
      }
      await out.truncate(this.size)
      await out.sync()
    } finally {
      await out.close()
    }
  }

  /** Materializes a range into memory. For tests and small images only. */
  async toBuffer (start = 0, end = this.size): Promise<Buffer> {
    const chunks: Buffer[] = []
    for await (const chunk of this.read(start, end)) chunks.push(chunk as Buffer)
    return Buffer.concat(chunks)
  }
}

const MIN_CHUNK = 128 << 10
const START_CHUNK = 1 << 20
/** Bytes of large read buffers the whole service may lend at once, split between its worker processes. */
export const LARGE_BUFFER_BUDGET = 48 << 20
const MAX_CHUNK = 4 << 20
const FAST_DRAIN_MS = 20

/**
 * Process-wide free lists of read buffers by power-of-two size, so streams
 * reuse memory instead of faulting in fresh pages for every chunk. Idle
 * buffers are capped; a buffer is reused only after its write has completed.
 */
export class SharedBuffers {
  readonly #free = new Map<number, Buffer[]>()
  #idleBytes = 0
  #largeInUse = 0

  /**
   * A buffer for up to `size` bytes. Buffers above the smallest class come
   * from a global budget: when slow clients hold it all, others get the
   * smallest class, so memory stays bounded however many clients stall.
   */
  take (size: number): Buffer {
    let cls = MIN_CHUNK
    while (cls < size) cls *= 2
    if (cls > MIN_CHUNK && this.#largeInUse + cls > this.budget) cls = MIN_CHUNK
    // An idle buffer at least as large serves as well: it is already held, so nothing new is allocated. Allocating
    // and dropping buffers under load makes V8 collect for their external memory (a fifth of the CPU, measured).
    const buffer = this.#takeIdle(cls) ?? this.#allocate(cls)
    if (buffer.length > MIN_CHUNK) this.#largeInUse += buffer.length
    return buffer
  }

  /** The smallest idle buffer of `cls` bytes or more. */
  #takeIdle (cls: number): Buffer | undefined {
    let best: number | undefined
    for (const [length, list] of this.#free) if (length >= cls && list.length > 0 && (best === undefined || length < best)) best = length
    if (best === undefined) return undefined
    const buffer = this.#free.get(best)!.pop()!
    this.#idleBytes -= buffer.length
    return buffer
  }

  #allocate (cls: number): Buffer {
    // The smallest buffers are outside the budget. For a large one, smaller idle buffers make room, so that what is
    // held (lent and idle) stays within the budget.
    if (cls === MIN_CHUNK) return Buffer.allocUnsafeSlow(cls)
    for (const [length, list] of this.#free) {
      while (list.length > 0 && this.#largeInUse + this.#idleBytes + cls > this.budget) this.#idleBytes -= list.pop()!.length
      if (list.length === 0) this.#free.delete(length)
    }
    return Buffer.allocUnsafeSlow(cls)
  }

  get largeInUse (): number { return this.#largeInUse }

  /** Large buffers this process may hold at once, lent or idle. */
  budget = LARGE_BUFFER_BUDGET

  /**
   * A buffer back from its write. It is kept for the next stream while what
   * is held stays within the budget: dropping and reallocating multi-MiB
   * buffers under load makes V8 collect for the external memory they hold.
   */
  give (buffer: Buffer): void {
    if (buffer.length > MIN_CHUNK) this.#largeInUse -= buffer.length
    if (this.#largeInUse + this.#idleBytes + buffer.length > this.budget) return
    let list = this.#free.get(buffer.length)
    if (list === undefined) { list = []; this.#free.set(buffer.length, list) }
    list.push(buffer)
    this.#idleBytes += buffer.length
  }
}

const sharedBuffers = new SharedBuffers()

/** One writeTo call: pooled buffers lent to the sink, and who waits for one to come back. */
interface WriteState {
  lent: Set<() => void>
  inFlight: number
  settled: (() => void) | undefined
}

/** This process's share of the read-buffer budget (a worker gets LARGE_BUFFER_BUDGET / WORKERS). */
export function setReadBufferBudget (bytes: number): void {
  sharedBuffers.budget = Math.max(MAX_CHUNK, bytes)
}

/** Bytes of large read buffers lent to responses right now (0 when no image is being sent). */
export function largeBuffersInUse (): number {
  return sharedBuffers.largeInUse
}

function drained (sink: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      sink.off('drain', onDrain)
      sink.off('close', onClose)
      sink.off('error', onClose)
      if (err !== undefined) reject(err)
      else resolve()
    }
    const onDrain = () => done()
    const onClose = () => done(new Error('sink closed'))
    sink.once('drain', onDrain)
    sink.once('close', onClose)
    sink.once('error', onClose)
  })
}

function checkRange (start: number, end: number, size: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > size || start > end) {
    throw new RangeError(`range ${start}..${end} is outside the ${size}-byte image`)
  }
}

function slice (segment: Segment, from: number, length: number): Segment {
  switch (segment.kind) {
    case 'buffer': return { kind: 'buffer', data: segment.data.subarray(from, from + length) }
    case 'file': return { kind: 'file', path: segment.path, offset: segment.offset + from, length }
    case 'zero': return { kind: 'zero', length }
  }
}

const ZEROS = Buffer.alloc(CHUNK)

async function readPiece (pool: FilePool, piece: Segment, from: number, length: number): Promise<Buffer> {
  switch (piece.kind) {
    case 'buffer': return piece.data.subarray(from, from + length)
    // At most one shared chunk of zeros: the caller asks again for the rest.
    case 'zero': return ZEROS.subarray(0, Math.min(length, ZEROS.length))
    case 'file': {
      return await readFully(await pool.get(piece.path), length, piece.offset + from, () => new Error(`${piece.path} ended early`))
    }
  }
}
