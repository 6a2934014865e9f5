import { OriginUnavailable } from '../errors.ts'
import type { Release } from '../io/byte-gate.ts'

/** What the budget needs of a cache. */
export interface BudgetedCache {
  readonly key: string
  readonly cachedBytes: number
  readonly lastServed: number
  evict (bytes: number): Promise<number>
}

/**
 * OS_IMAGES_CACHE_MAX_BYTES: the cached bytes of every image together, and
 * the bytes being written, never exceed `maxBytes` (Infinity: no budget).
 * Room is made by evicting the least recently served images' blocks first.
 */
export class CacheBudget {
  readonly maxBytes: number
  readonly #caches = new Set<BudgetedCache>()
  #reserved = 0
  #making: Promise<void> = Promise.resolve()

  constructor (maxBytes = Infinity) {
    this.maxBytes = maxBytes
  }

  add (cache: BudgetedCache): void { this.#caches.add(cache) }
  remove (cache: BudgetedCache): void { this.#caches.delete(cache) }

  /** Bytes cached by every image, plus those being written. */
  get usedBytes (): number {
    let used = this.#reserved
    for (const cache of this.#caches) used += cache.cachedBytes
    return used
  }

  /** Whether `bytes` more fit without evicting anything. */
  fits (bytes: number): boolean { return this.usedBytes + bytes <= this.maxBytes }

  /**
   * Room for `bytes` about to be written for `cache`, evicting others' (then
   * its own) least recently served blocks when needed. Rejects when nothing can
   * be evicted (every cached block is being sent). Release once the bytes are
   * written (they then count as the cache's).
   */
  async reserve (cache: BudgetedCache, bytes: number): Promise<Release> {
    if (this.maxBytes !== Infinity) {
      // One eviction at a time: two that run together would each count the other's room as theirs.
      const turn = this.#making.then(async () => {
        const over = this.usedBytes + bytes - this.maxBytes
        if (over > 0 && await this.#evict(cache, over) < over) {
          throw new OriginUnavailable(`the image cache budget of ${this.maxBytes} bytes is held by responses in flight`)
        }
        this.#reserved += bytes
      })
      this.#making = turn.catch(() => {})
      await turn
    } else {
      this.#reserved += bytes
    }
    let released = false
    return () => {
      if (released) return
      released = true
      this.#reserved -= bytes
    }
  }

  /**
   * Evicts at least `bytes` if it can, from the least recently served images
   * first (`cache` last); resolves with the bytes freed, once every eviction
   * asked for before has finished (a full disk makes several writers ask at once).
   */
  async makeRoom (cache: BudgetedCache, bytes: number): Promise<number> {
    const turn = this.#making.then(async () => await this.#evict(cache, bytes))
    this.#making = turn.then(() => {}, () => {})
    return await turn
  }

  async #evict (cache: BudgetedCache, bytes: number): Promise<number> {
    const order = [...this.#caches].filter(c => c !== cache && c.cachedBytes > 0).sort((a, b) => a.lastServed - b.lastServed)
    order.push(cache)
    let freed = 0
    for (const victim of order) {
      if (freed >= bytes) break
      freed += await victim.evict(bytes - freed)
    }
    return freed
  }
}
