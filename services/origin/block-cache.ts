import { open, type FileHandle } from 'node:fs/promises'
import { OriginChanged, OriginUnavailable, type DomainError } from '../errors.ts'
import { ConcurrencyLimiter } from '../http/limiter.ts'
import { backoffDelay, sleep } from '../io/backoff.ts'
import type { ByteGate, Release } from '../io/byte-gate.ts'
import type { HolePuncher } from '../io/hole-punch.ts'
import { BlockHolds, blockSpan } from './block-holds.ts'
import type { BlockRecord } from './block-record.ts'
import type { CacheBudget } from './cache-budget.ts'
import { TransientFetchError, type OriginClient, type OriginFile } from './origin-client.ts'

/**
 * 1 MiB blocks. A BMC reads 256 KiB ranges (four to a block) and a response
 * slices mapped files 1 MiB at a time; at 100 MB/s a block is 10 ms of transfer
 * against well under a millisecond of request overhead; the edges of what a
 * minimal ISO or a PXE boot reads waste at most a block each; and the map of
 * a 60 GiB image is 61,440 bits. An nginx `slice` in front should be a multiple.
 */
export const BLOCK_SIZE = 1 << 20

/** Demand fetches in flight per image (a full-ISO stream's read-ahead, a BMC's parallel ranges). */
const DEMAND_FETCHES = 8
/** Background fill's fetches in flight per image. */
const FILL_FETCHES = 2
const FETCH_ATTEMPTS = 4
/** What a full disk makes the caches give back at once, so that the next writes do not each hit ENOSPC. */
const ROOM_ON_FULL_DISK = 64 << 20
const RETRY = { baseMs: 250, maxMs: 4000, jitter: 0.5 }

export type FetchOutcome = 'ok' | 'retried' | 'failed' | 'changed'

export interface CacheMetrics {
  /** Bytes a block fetch brought from the origin. */
  fetched: (bytes: number) => void
  /** One fetch attempt's outcome and seconds. */
  fetchEnded: (outcome: FetchOutcome, seconds: number) => void
  evicted: (bytes: number) => void
}

export interface CacheLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
  error: (obj: object, msg: string) => void
}

export interface BlockCacheOptions {
  /** The OS image key, for log lines. */
  key: string
  /** The sparse cache file, at the file's full size. */
  path: string
  record: BlockRecord
  origin: OriginClient
  file: OriginFile
  /** How long a read waits for absent bytes before it fails (OS_IMAGES_FETCH_TIMEOUT). */
  waitMs: number
  log: CacheLog
  metrics?: CacheMetrics | undefined
  budget?: CacheBudget | undefined
  /** Gives disk back on eviction; without it the cache cannot shrink. */
  punch?: HolePuncher | undefined
  /** Asks the other processes that read this file which of these blocks they hold; those are not evicted. */
  heldElsewhere?: ((blocks: number[]) => Promise<number[]>) | undefined
  /** Called once when the origin's file is found to have changed. */
  onChanged?: ((reason: string) => void) | undefined
  /** Ends the cache's fetches (those of a preparation the store gives up on when it closes) as `close()` does. */
  signal?: AbortSignal | undefined
}

/**
 * Block-sized buffers fetches read into, reused: a fresh megabyte per block
 * left the fetching process holding a hundred MiB more after a cold stream
 * (measured), which malloc does not give back at once.
 */
const spareBuffers: Buffer[] = []
const SPARE_BUFFERS = 8

function takeBuffer (size: number): Buffer {
  const spare = spareBuffers.pop()
  return spare !== undefined && spare.length === size ? spare : Buffer.allocUnsafeSlow(size)
}

function giveBuffer (buffer: Buffer): void {
  if (spareBuffers.length < SPARE_BUFFERS) spareBuffers.push(buffer)
}

const ABSENT = 0
const PRESENT = 1
const EVICTING = 2

/**
 * An OS image read from its origin block by block into a sparse file that
 * holds it at its full size, with the record of which blocks are there. Reads
 * ask `acquire` first: absent blocks are fetched (each at most once at a time),
 * written, synced and recorded before anyone reads them, and held against
 * eviction while the reader sends them.
 */
export class BlockCache implements ByteGate {
  readonly key: string
  readonly path: string
  readonly size: number
  readonly blockSize: number
  readonly contentId: string
  readonly #record: BlockRecord
  readonly #handle: FileHandle
  readonly #origin: OriginClient
  readonly #file: OriginFile
  readonly #options: BlockCacheOptions
  readonly #state: Uint8Array
  /** When each block was last read, in seconds since the cache opened: eviction takes the oldest. */
  readonly #lastUse: Uint32Array
  readonly #opened = Date.now()
  readonly #fetching = new Map<number, Promise<void>>()
  readonly #evicting = new Map<number, Promise<void>>()
  readonly #holds = new BlockHolds()
  readonly #demand = new ConcurrencyLimiter(DEMAND_FETCHES, 0)
  readonly #abort = new AbortController()
  #cachedBytes = 0
  #lastServed = 0
  /** Why this cache no longer fetches: the first OriginChanged its origin answered, thrown again to every later fetch. */
  #changed: DomainError | undefined
  #noSpaceLogged = false
  /** The file stands whole under the image's upstream name: nothing is evicted from it. */
  #final = false

  private constructor (options: BlockCacheOptions, handle: FileHandle, inode: number) {
    this.#options = options
    this.inode = inode
    options.signal?.addEventListener('abort', () => this.#abort.abort(options.signal!.reason), { once: true, signal: this.#abort.signal })
    this.key = options.key
    this.path = options.path
    this.#record = options.record
    this.#handle = handle
    this.#origin = options.origin
    this.#file = options.file
    this.size = options.file.size
    this.blockSize = options.record.header.blockSize
    this.contentId = options.record.header.contentId
    this.#state = new Uint8Array(options.record.blocks)
    this.#lastUse = new Uint32Array(options.record.blocks)
    for (let block = 0; block < this.#state.length; block++) {
      if (!options.record.has(block)) continue
      this.#state[block] = PRESENT
      this.#cachedBytes += this.#blockLength(block)
    }
    options.budget?.add(this)
  }

  static async open (options: BlockCacheOptions): Promise<BlockCache> {
    const handle = await open(options.path, 'r+')
    try {
      return new BlockCache(options, handle, (await handle.stat()).ino)
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  /** The file's inode: what another process names this cache by, so it never asks for blocks of a replaced one. */
  readonly inode: number

  get cachedBytes (): number { return this.#cachedBytes }
  get complete (): boolean { return this.#record.complete }
  /** When a read last asked for bytes (ms since the epoch; 0: never). */
  get lastServed (): number { return this.#lastServed }

  /** Another process served from the cache: it counts as recently served (evicted last). */
  served (): void { this.#lastServed = Date.now() }
  /** Why this cache no longer fetches: its origin's file changed. */
  get changed (): string | undefined { return this.#changed?.message }

  async acquire (offset: number, length: number, readAhead = 0): Promise<Release> {
    const { first, last } = blockSpan(offset, length, this.blockSize)
    if (first > last) return () => {}
    this.#lastServed = Date.now()
    const now = this.#seconds()
    for (let block = first; block <= last; block++) this.#lastUse[block] = now
    const ahead = blockSpan(offset + length, Math.min(readAhead, this.size - offset - length), this.blockSize)
    for (let block = Math.max(ahead.first, last + 1); block <= ahead.last; block++) {
      if (this.#state[block] === ABSENT && !this.#fetching.has(block)) this.#want(block).catch(() => {})
    }
    const deadline = Date.now() + this.#options.waitMs
    for (;;) {
      const waits: Array<Promise<void>> = []
      for (let block = first; block <= last; block++) if (this.#state[block] !== PRESENT) waits.push(this.#want(block))
      if (waits.length === 0) return this.#holds.hold(first, last)
      await withDeadline(Promise.all(waits), deadline, () => new OriginUnavailable(`no answer within ${this.#options.waitMs / 1000} s`))
    }
  }

  /**
   * Fetches every absent block, FILL_FETCHES at a time, while `more()` allows
   * (a budget); resolves once the image is complete, or stops early.
   */
  async fill (signal: AbortSignal, more: () => boolean = () => true): Promise<boolean> {
    let next = 0
    const worker = async (): Promise<void> => {
      while (!signal.aborted && this.#changed === undefined && more()) {
        while (next < this.#state.length && this.#state[next] === PRESENT) next++
        if (next >= this.#state.length) return
        await this.#want(next++, 'fill')
      }
    }
    await Promise.all(Array.from({ length: FILL_FETCHES }, worker))
    return this.#record.complete
  }

  /**
   * Evicts up to `bytes` of this image's blocks, least recently read first,
   * never one that a reader holds here or in another process. Resolves with
   * the bytes freed.
   */
  async evict (bytes: number): Promise<number> {
    const punch = this.#options.punch
    if (punch === undefined || this.#final) return 0
    const candidates: number[] = []
    for (let block = 0; block < this.#state.length; block++) {
      if (this.#state[block] === PRESENT && !this.#holds.held(block)) candidates.push(block)
    }
    candidates.sort((a, b) => this.#lastUse[a]! - this.#lastUse[b]!)
    const chosen: number[] = []
    let planned = 0
    for (const block of candidates) {
      if (planned >= bytes) break
      chosen.push(block)
      planned += this.#blockLength(block)
    }
    if (chosen.length === 0) return 0
    let finish!: () => void
    const evicting = new Promise<void>(resolve => { finish = resolve })
    for (const block of chosen) { this.#state[block] = EVICTING; this.#evicting.set(block, evicting) }
    let freed = 0
    try {
      const elsewhere = new Set(await (this.#options.heldElsewhere?.(chosen) ?? Promise.resolve([])).catch(() => chosen))
      const victims = chosen.filter(block => !elsewhere.has(block))
      // The record forgets them (synced) before their bytes go: a set bit never stands for a hole.
      await this.#record.markAbsent(victims)
      for (const block of victims) {
        this.#state[block] = ABSENT
        this.#cachedBytes -= this.#blockLength(block)
      }
      for (const block of victims) {
        await punch(this.#handle.fd, block * this.blockSize, this.#blockLength(block))
        freed += this.#blockLength(block)
      }
    } finally {
      // Blocks held elsewhere (or all of them, when the record could not be written) stay present.
      for (const block of chosen) {
        if (this.#state[block] === EVICTING) this.#state[block] = PRESENT
        this.#evicting.delete(block)
      }
      finish()
    }
    if (freed > 0) this.#options.metrics?.evicted(freed)
    return freed
  }

  /** The file is to stand whole under the image's upstream name: from now on nothing is evicted from it. */
  finish (): void {
    if (!this.#record.complete) throw new Error(`${this.path} is not complete`)
    this.#final = true
  }

  async close (): Promise<void> {
    this.#abort.abort(new Error('block cache closing'))
    this.#options.budget?.remove(this)
    await Promise.allSettled([...this.#fetching.values()])
    this.#origin.close()
    await this.#record.close()
    await this.#handle.close()
  }

  /**
   * The block's fetch, started unless it runs already; after an eviction of it
   * has finished. Only what a host reads may evict to make room on a full disk:
   * a fill that did would evict what it filled a moment before, for ever.
   */
  #want (block: number, purpose: 'read' | 'fill' = 'read'): Promise<void> {
    const running = this.#fetching.get(block)
    if (running !== undefined) return running
    const evicting = this.#evicting.get(block)
    if (evicting !== undefined) return evicting.then(() => this.#state[block] === PRESENT ? undefined : this.#want(block, purpose))
    const fetching = this.#fetch(block, purpose).finally(() => this.#fetching.delete(block))
    this.#fetching.set(block, fetching)
    return fetching
  }

  async #fetch (block: number, purpose: 'read' | 'fill'): Promise<void> {
    const release = await this.#demand.acquire(this.#abort.signal)
    try {
      const start = block * this.blockSize
      const end = start + this.#blockLength(block)
      for (let attempt = 1; ; attempt++) {
        if (this.#changed !== undefined) throw this.#changed
        const started = performance.now()
        let bytes: Buffer
        const buffer = takeBuffer(this.blockSize)
        try {
          bytes = await this.#origin.fetch(this.#file, start, end, this.#abort.signal, buffer)
        } catch (err) {
          giveBuffer(buffer)
          const seconds = (performance.now() - started) / 1000
          if (this.#abort.signal.aborted) throw new OriginUnavailable('the image is closing')
          if (err instanceof OriginChanged) {
            this.#options.metrics?.fetchEnded('changed', seconds)
            this.#originChanged(err)
            throw err
          }
          const last = attempt >= FETCH_ATTEMPTS || !(err instanceof TransientFetchError)
          this.#options.metrics?.fetchEnded(last ? 'failed' : 'retried', seconds)
          if (last) throw new OriginUnavailable((err as Error).message)
          await sleep(backoffDelay(attempt, RETRY), this.#abort.signal).catch(() => {})
          continue
        }
        this.#options.metrics?.fetchEnded('ok', (performance.now() - started) / 1000)
        this.#options.metrics?.fetched(bytes.length)
        try {
          await this.#store(block, bytes, purpose)
        } finally {
          giveBuffer(buffer)
        }
        return
      }
    } finally {
      release()
    }
  }

  /** Writes a block, syncs it, then records it: only then may anyone read it. */
  async #store (block: number, bytes: Buffer, purpose: 'read' | 'fill'): Promise<void> {
    const budget = this.#options.budget
    const releaseRoom = await budget?.reserve(this, bytes.length)
    try {
      try {
        await this.#write(block, bytes)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
        // A full disk costs a block, never the cache: make room and try once more.
        if (!this.#noSpaceLogged) {
          this.#noSpaceLogged = true
          this.#options.log.error({ image: this.key, file: this.path }, 'no space left in DATA_DIR for the OS image cache: blocks are evicted to make room for what hosts read')
        }
        if (purpose === 'fill' || budget === undefined) throw new OriginUnavailable('no space left in DATA_DIR for the image cache')
        // Tried again even when this eviction freed nothing: a concurrent one may have made the room.
        await budget.makeRoom(this, ROOM_ON_FULL_DISK)
        await this.#write(block, bytes).catch((again: unknown) => { throw new OriginUnavailable(`cannot write the image cache: ${(again as Error).message}`) })
      }
      await this.#record.markPresent([block])
      // Counted as the cache's before the reservation goes, so the budget never sees it twice or not at all.
      if (this.#state[block] !== PRESENT) {
        this.#state[block] = PRESENT
        this.#cachedBytes += bytes.length
      }
    } finally {
      releaseRoom?.()
    }
  }

  async #write (block: number, bytes: Buffer): Promise<void> {
    // A filling disk may take part of a write before it says ENOSPC: the rest is written (and so refused) too.
    for (let done = 0; done < bytes.length;) {
      const { bytesWritten } = await this.#handle.write(bytes, done, bytes.length - done, block * this.blockSize + done)
      if (bytesWritten === 0) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
      done += bytesWritten
    }
    await this.#handle.datasync()
  }

  #originChanged (err: DomainError): void {
    if (this.#changed !== undefined) return
    this.#changed = err
    this.#options.log.warn({ image: this.key, reason: err.message }, 'the OS image changed at its origin; it is prepared again')
    this.#options.onChanged?.(err.message)
  }

  #blockLength (block: number): number {
    return Math.min(this.blockSize, this.size - block * this.blockSize)
  }

  #seconds (): number { return Math.floor((Date.now() - this.#opened) / 1000) }
}

async function withDeadline<T> (work: Promise<T>, deadline: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(timedOut()), Math.max(0, deadline - Date.now())) })
  try {
    return await Promise.race([work, expired])
  } finally {
    clearTimeout(timer)
  }
}
