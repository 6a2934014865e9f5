import { createHash } from 'node:crypto'
import { open, stat } from 'node:fs/promises'
import { Readable, type Writable } from 'node:stream'
import { setImmediate } from 'node:timers/promises'
import { FilePool, type OpenFile } from './file-pool.ts'
import { segmentLength, type Segment } from './segment.ts'
import { PatchOverlap } from '../errors.ts'
import { readFully } from '../io/read-fully.ts'

export const CHUNK = 1 << 20

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
   * Writes [start, end) to `sink` with backpressure. File bytes are slices of
   * the file's memory map where the pool maps (pages not in the page cache are
   * faulted in off the event loop first), else reads into reused buffers.
   * Chunks grow while the sink keeps up and shrink when it stalls. Resolves
   * once every write has completed. On failure it rejects at once and the
   * caller destroys the sink; the files stay open (and mapped) until the sink
   * has closed, so that nothing it still queues refers to an unmapped file.
   */
  async writeTo (sink: Writable, start = 0, end = this.size): Promise<void> {
    checkRange(start, end, this.size)
    const sending = new Sending(sink, this.pool)
    try {
      await this.#writePieces(sink, start, end, sending)
      await sending.completed()
    } catch (err) {
      sending.releaseOnClose()
      throw err
    }
    sending.releaseFiles()
  }

  async #writePieces (sink: Writable, start: number, end: number, sending: Sending): Promise<void> {
    let chunkSize = START_CHUNK
    let sinceYield = 0
    for (const piece of this.pieces(start, end)) {
      const length = segmentLength(piece)
      const file = piece.kind === 'file' ? await sending.file(piece.path) : undefined
      for (let done = 0; done < length;) {
        if (sink.destroyed) throw new Error('sink closed')
        const want = Math.min(chunkSize, length - done)
        let chunk: Buffer
        let callback: (() => void) | undefined
        if (piece.kind !== 'file') {
          chunk = await readPiece(this.pool, piece, done, want)
        } else if (file!.region !== undefined) {
          const at = piece.offset + done
          // The socket copies a slice at once, on the event loop: 4 MiB slices took its delay with 8 clients from
          // about 25 to 40 ms (measured), 1 MiB ones cost no throughput.
          const size = Math.min(want, MAPPED_CHUNK)
          if (!file!.region.resident(at, size)) await populate(file!, at, size)
          chunk = file!.region.bytes.subarray(at, at + size)
          callback = sending.track()
        } else {
          ({ chunk, release: callback } = await sending.readInto(file!, piece.offset + done, want))
        }
        done += chunk.length
        if (sink.destroyed) { callback?.(); throw new Error('sink closed') }
        if (!sink.write(chunk, callback)) {
          const waitStarted = performance.now()
          await drained(sink)
          // A sink that drains at once can take bigger chunks; one that stalls gets smaller ones.
          chunkSize = performance.now() - waitStarted < FAST_DRAIN_MS ? Math.min(MAX_CHUNK, chunkSize * 2) : Math.max(MIN_CHUNK, chunkSize / 2)
        } else {
          chunkSize = Math.min(MAX_CHUNK, chunkSize * 2)
        }
        // A socket whose reader keeps up completes writes at once, and then its 'drain' (and the HTTP response's
        // uncork) come as process.nextTick callbacks: a stream of mapped bytes would run inside the tick queue
        // for the whole file, and the event loop (other clients, timers) would wait. Let it turn now and then.
        sinceYield += chunk.length
        if (sinceYield >= YIELD_BYTES) { sinceYield = 0; await setImmediate() }
      }
    }
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
/** Bytes a stream may hand over synchronously before it lets the event loop turn. */
const YIELD_BYTES = 2 << 20
/** Largest slice of a mapped file handed to the sink at once. */
const MAPPED_CHUNK = 1 << 20

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

/**
 * One writeTo call: the files it retained, the writes the sink has not
 * completed yet, and the pooled buffers those hold (where files are read).
 */
class Sending {
  readonly #sink: Writable
  readonly #pool: FilePool
  readonly #files = new Map<string, OpenFile>()
  readonly #pending = new Set<() => void>()
  #buffersLent = 0
  #wake: (() => void) | undefined

  constructor (sink: Writable, pool: FilePool) {
    this.#sink = sink
    this.#pool = pool
  }

  async file (path: string): Promise<OpenFile> {
    let file = this.#files.get(path)
    if (file === undefined) {
      file = await this.#pool.retain(path)
      this.#files.set(path, file)
    }
    return file
  }

  /** A write's callback: the write is pending until it is called; later calls do nothing. */
  track (onDone?: () => void): () => void {
    let called = false
    const done = (): void => {
      if (called) return
      called = true
      this.#pending.delete(done)
      onDone?.()
      const wake = this.#wake
      this.#wake = undefined
      wake?.()
    }
    this.#pending.add(done)
    return done
  }

  async #changed (): Promise<void> {
    await new Promise<void>(resolve => { this.#wake = resolve })
  }

  /** Reads file bytes into a pooled buffer; at most two per stream, one being read and one being sent. */
  async readInto (file: OpenFile, position: number, want: number): Promise<{ chunk: Buffer, release: () => void }> {
    while (this.#buffersLent >= 2) await this.#changed()
    const buffer = sharedBuffers.take(want)
    this.#buffersLent++
    const release = this.track(() => { sharedBuffers.give(buffer); this.#buffersLent-- })
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

  /** Resolves once the sink has completed every write (or closed: then it sends nothing more). */
  async completed (): Promise<void> {
    if (this.#pending.size === 0) return
    const sink = this.#sink
    let onClose: (() => void) | undefined
    const closing = new Promise<void>(resolve => { onClose = resolve; sink.once('close', resolve) })
    try {
      while (this.#pending.size > 0 && !sink.closed) await Promise.race([this.#changed(), closing])
      this.#forget()
    } finally {
      sink.off('close', onClose!)
    }
  }

  /**
   * After a failure: what the sink still holds may refer to a mapped file, so
   * the files are released once the sink has closed (the caller destroys it).
   * A closed sink sends nothing more, so its writes count as done: real sockets
   * cancel them, other streams need not call back at all.
   */
  releaseOnClose (): void {
    const release = (): void => { this.#forget(); this.releaseFiles() }
    if (this.#pending.size === 0 || this.#sink.closed) release()
    else this.#sink.once('close', release)
  }

  #forget (): void {
    for (const done of [...this.#pending]) done()
  }

  releaseFiles (): void {
    for (const file of this.#files.values()) file.release()
    this.#files.clear()
  }
}

/**
 * Faults a range of a mapped file into the page cache on a worker thread, so
 * that the socket's copy does not block the event loop on disk. Where the
 * kernel cannot (before Linux 5.14), a read through the thread pool does it.
 */
async function populate (file: OpenFile, position: number, length: number): Promise<void> {
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
      const file = await pool.retain(piece.path)
      try {
        return await readFully(file.handle, length, piece.offset + from, () => new Error(`${piece.path} ended early`))
      } finally {
        file.release()
      }
    }
  }
}
