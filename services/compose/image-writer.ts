import { open } from 'node:fs/promises'
import { Transform, Writable, type Readable } from 'node:stream'
import { setImmediate } from 'node:timers/promises'
import type { ComposedImage } from './composed-image.ts'
import { faultIn, FileReads, type LentChunk } from './file-reads.ts'
import { LARGEST_BUFFER, ReadBuffers, SMALLEST_BUFFER } from './read-buffers.ts'
import { segmentLength } from './segment.ts'

const MIN_CHUNK = SMALLEST_BUFFER
const START_CHUNK = 1 << 20
const MAX_CHUNK = LARGEST_BUFFER
const FAST_DRAIN_MS = 20
/** Bytes a stream may hand over synchronously before it lets the event loop turn. */
const YIELD_BYTES = 2 << 20
/** Largest slice of a mapped file handed to the sink at once. */
const MAPPED_CHUNK = 1 << 20
/** Zero segments are sent as slices of this one chunk. */
const ZEROS = Buffer.alloc(1 << 20)
/** How far a stream asks a block cache to fetch ahead of what it sends, within what it will send. */
const READ_AHEAD = 8 << 20

/**
 * Writes byte ranges of composed images: the one path by which their bytes
 * are read, whether into a socket, a file or memory. File bytes come from
 * the image's pool, as mapped slices or reads into `buffers`.
 */
export class ImageWriter {
  readonly #buffers: ReadBuffers

  constructor (buffers = new ReadBuffers()) {
    this.#buffers = buffers
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
  async writeTo (image: ComposedImage, sink: Writable, start = 0, end = image.size): Promise<void> {
    image.checkRange(start, end)
    const reads = new FileReads(image.pool, this.#buffers)
    const sending = new Sending(sink, reads)
    try {
      await writePieces(image, sink, start, end, reads, sending)
      await sending.completed()
    } catch (err) {
      sending.releaseOnClose()
      throw err
    }
    reads.release()
  }

  /**
   * Has the file bytes of [start, end) fetched where they may be absent (a
   * block cache), so that a response learns it cannot have them before it starts.
   */
  async fetchAhead (image: ComposedImage, start: number, end: number): Promise<void> {
    image.checkRange(start, end)
    for (const piece of image.pieces(start, end)) {
      if (piece.kind !== 'file') continue
      const release = await image.pool.gateOf(piece.path)?.acquire(piece.offset, piece.length)
      release?.()
    }
  }

  /** Reads a range into memory. For preparing images and for tests: served images are written, not held. */
  async toBuffer (image: ComposedImage, start = 0, end = image.size): Promise<Buffer> {
    image.checkRange(start, end)
    const bytes = Buffer.allocUnsafe(end - start)
    let at = 0
    // A high-water mark above the whole range: the copies are synchronous, so no write need wait for 'drain'.
    const sink = new Writable({ highWaterMark: bytes.length + 1, write (chunk: Buffer, _encoding, done) { at += chunk.copy(bytes, at); done() } })
    await writeThenEnd(this.writeTo(image, sink, start, end), sink)
    return bytes
  }

  /** A Readable of bytes [start, end) (end exclusive) with backpressure. */
  read (image: ComposedImage, start = 0, end = image.size): Readable {
    image.checkRange(start, end)
    // What writeTo hands over is lent (pooled buffers, mapped pages) until the write completes: a Readable keeps copies.
    const out = new Transform({ highWaterMark: 1 << 20, transform (chunk: Buffer, _encoding, done) { done(null, Buffer.from(chunk)) } })
    writeThenEnd(this.writeTo(image, out, start, end), out, { errorToReader: true }).catch(() => {})
    return out
  }

  /**
   * Writes the whole image to `path`, leaving holes where it is zero (zero
   * segments and all-zero chunks), so multi-GB images with sparse payloads
   * cost little disk. Not atomic: write to a temporary name and rename.
   */
  async saveSparse (image: ComposedImage, path: string): Promise<void> {
    const out = await open(path, 'w')
    try {
      let position = 0
      const sink = new Writable({
        write (chunk: Buffer, _encoding, done) {
          const at = position
          position += chunk.length
          if (isZero(chunk)) done()
          else out.write(chunk, 0, chunk.length, at).then(() => done(), done)
        }
      })
      await writeThenEnd(this.writeTo(image, sink), sink)
      await out.truncate(image.size)
      await out.sync()
    } finally {
      await out.close()
    }
  }
}

/**
 * Ends `sink` once `writing` is done; when it fails, destroys the sink, as
 * writeTo's callers must, passing the error on only to a sink someone reads.
 */
async function writeThenEnd (writing: Promise<void>, sink: Writable, { errorToReader = false } = {}): Promise<void> {
  try {
    await writing
  } catch (err) {
    sink.destroy(errorToReader ? err as Error : undefined)
    throw err
  }
  sink.end()
}

async function writePieces (image: ComposedImage, sink: Writable, start: number, end: number, reads: FileReads, sending: Sending): Promise<void> {
  let chunkSize = START_CHUNK
  let sinceYield = 0
  for (const piece of image.pieces(start, end)) {
    const length = segmentLength(piece)
    const file = piece.kind === 'file' ? await reads.file(piece.path) : undefined
    const gate = file?.gate
    for (let done = 0; done < length;) {
      if (sink.destroyed) throw new Error('sink closed')
      const want = Math.min(chunkSize, length - done)
      let chunk: Buffer
      let callback: (() => void) | undefined
      if (piece.kind === 'buffer') {
        chunk = piece.data.subarray(done, done + want)
      } else if (piece.kind === 'zero') {
        chunk = ZEROS.subarray(0, Math.min(want, ZEROS.length))
      } else if (file!.region !== undefined) {
        const at = piece.offset + done
        // The socket copies a slice at once, on the event loop: 4 MiB slices took its delay with 8 clients from
        // about 25 to 40 ms (measured), 1 MiB ones cost no throughput.
        const size = Math.min(want, MAPPED_CHUNK)
        // Held until the socket has the slice: its block is not evicted (read as a hole: zeros) under it.
        const held = gate !== undefined ? await gate.acquire(at, size, Math.min(READ_AHEAD, length - done - size)) : undefined
        if (!file!.region.resident(at, size)) await faultIn(file!, at, size).catch((err: unknown) => { held?.(); throw err })
        chunk = file!.region.bytes.subarray(at, at + size)
        callback = sending.track(held)
      } else {
        const at = piece.offset + done
        const held = gate !== undefined ? await gate.acquire(at, want, Math.min(READ_AHEAD, length - done - want)) : undefined
        let lent: LentChunk
        try { lent = await reads.readInto(file!, at, want) } finally { held?.() }
        chunk = lent.chunk
        callback = sending.track(lent.release)
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

/** The writes of one writeTo call that the sink has not completed yet. */
class Sending {
  readonly #sink: Writable
  readonly #reads: FileReads
  readonly #pending = new Set<() => void>()
  #wake: (() => void) | undefined

  constructor (sink: Writable, reads: FileReads) {
    this.#sink = sink
    this.#reads = reads
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

  /** Resolves once the sink has completed every write (or closed: then it sends nothing more). */
  async completed (): Promise<void> {
    if (this.#pending.size === 0) return
    const sink = this.#sink
    let onClose: (() => void) | undefined
    const closing = new Promise<void>(resolve => { onClose = resolve; sink.once('close', resolve) })
    try {
      while (this.#pending.size > 0 && !sink.closed) await Promise.race([new Promise<void>(resolve => { this.#wake = resolve }), closing])
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
    const release = (): void => { this.#forget(); this.#reads.release() }
    if (this.#pending.size === 0 || this.#sink.closed) release()
    else this.#sink.once('close', release)
  }

  #forget (): void {
    for (const done of [...this.#pending]) done()
  }
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

function isZero (chunk: Buffer): boolean {
  for (let at = 0; at < chunk.length; at += ZEROS.length) {
    const part = chunk.subarray(at, at + ZEROS.length)
    if (!part.equals(ZEROS.subarray(0, part.length))) return false
  }
  return true
}
