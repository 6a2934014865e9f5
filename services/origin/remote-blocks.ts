import type { ByteGate, Release } from '../io/byte-gate.ts'
import { BlockHolds, blockSpan } from './block-holds.ts'

/** Asks the process that owns the cache to have [offset, offset + length) present (and `readAhead` more fetched). */
export type AskForBytes = (offset: number, length: number, readAhead: number) => Promise<void>

/** How often a process that reads cached blocks tells the owner it still serves the image (its eviction order). */
const SERVED_NOTICE_MS = 5000

/**
 * A cache file as a serving process that does not own it sees it: the owner
 * (the cluster's primary) fetches, and tells which blocks are present; this
 * side remembers what it was told, holds what it reads, and, when the owner
 * wants to evict, forgets those blocks and names the ones it still holds.
 */
export class RemoteBlocks implements ByteGate {
  readonly blockSize: number
  readonly #present: Uint8Array
  readonly #holds = new BlockHolds()
  readonly #ask: AskForBytes
  readonly #served: () => void
  #noticed = 0

  /** `served` tells the owner that this process served from the cache (at most every few seconds). */
  constructor (size: number, blockSize: number, ask: AskForBytes, served: () => void = () => {}) {
    this.blockSize = blockSize
    this.#present = new Uint8Array(Math.ceil(size / blockSize))
    this.#ask = ask
    this.#served = served
  }

  async acquire (offset: number, length: number, readAhead = 0): Promise<Release> {
    const { first, last } = blockSpan(offset, length, this.blockSize)
    // Blocks read here from what this process knows never reach the owner: it would take the image for idle.
    if (Date.now() - this.#noticed >= SERVED_NOTICE_MS) { this.#noticed = Date.now(); this.#served() }
    for (;;) {
      if (first > last) return () => {}
      let known = true
      for (let block = first; block <= last && known; block++) known = this.#present[block] === 1
      if (known) return this.#holds.hold(first, last)
      await this.#ask(offset, length, readAhead)
      // The owner had them when it answered, and an eviction of them would come after this answer: hold them now.
      for (let block = first; block <= last; block++) this.#present[block] = 1
    }
  }

  /** The owner evicts `blocks`: they are forgotten here; the ones this process holds are returned (and kept). */
  evicting (blocks: readonly number[]): number[] {
    const held: number[] = []
    for (const block of blocks) {
      if (this.#holds.held(block)) held.push(block)
      else this.#present[block] = 0
    }
    return held
  }
}
