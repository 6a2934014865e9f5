import type { Release } from '../io/byte-gate.ts'

/** The blocks [first, last] that bytes [offset, offset + length) fall in; empty (first > last) for no bytes. */
export function blockSpan (offset: number, length: number, blockSize: number): { first: number, last: number } {
  if (length <= 0) return { first: 1, last: 0 }
  return { first: Math.floor(offset / blockSize), last: Math.floor((offset + length - 1) / blockSize) }
}

/** Blocks being read or sent by this process: they are not evicted until released. */
export class BlockHolds {
  readonly #counts = new Map<number, number>()

  hold (first: number, last: number): Release {
    for (let block = first; block <= last; block++) this.#counts.set(block, (this.#counts.get(block) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      for (let block = first; block <= last; block++) {
        const count = this.#counts.get(block)! - 1
        if (count === 0) this.#counts.delete(block)
        else this.#counts.set(block, count)
      }
    }
  }

  held (block: number): boolean { return this.#counts.has(block) }

  /** Blocks held right now (bounded by the responses in flight). */
  get size (): number { return this.#counts.size }
}
