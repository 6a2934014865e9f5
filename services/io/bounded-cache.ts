export interface CacheLimits<V> {
  /** At most this many entries. */
  maxEntries?: number
  /** At most this many bytes, as `sizeOf` counts them; the newest entry stays even when it alone is larger. */
  maxBytes?: number
  sizeOf?: (value: V) => number
}

/**
 * A Map that forgets its oldest entries past a count or a byte bound. `get`
 * makes an entry the newest (least recently used goes first); `peek` leaves
 * the order alone (first in, first out).
 */
export class BoundedCache<K, V> {
  readonly #entries = new Map<K, V>()
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #sizeOf: (value: V) => number
  #bytes = 0

  constructor (limits: CacheLimits<V>) {
    this.#maxEntries = limits.maxEntries ?? Infinity
    this.#maxBytes = limits.maxBytes ?? Infinity
    this.#sizeOf = limits.sizeOf ?? (() => 0)
  }

  get size (): number { return this.#entries.size }
  get bytes (): number { return this.#bytes }

  get (key: K): V | undefined {
    const value = this.#entries.get(key)
    if (value === undefined) return undefined
    this.#entries.delete(key)
    this.#entries.set(key, value)
    return value
  }

  peek (key: K): V | undefined {
    return this.#entries.get(key)
  }

  /** Stores `value` as the newest entry, then forgets the oldest ones until within bounds. */
  set (key: K, value: V): void {
    this.delete(key)
    this.#entries.set(key, value)
    this.#bytes += this.#sizeOf(value)
    while (this.#entries.size > 1 && (this.#entries.size > this.#maxEntries || this.#bytes > this.#maxBytes)) {
      this.delete(this.#entries.keys().next().value!)
    }
  }

  delete (key: K): boolean {
    const value = this.#entries.get(key)
    if (value === undefined && !this.#entries.has(key)) return false
    this.#entries.delete(key)
    this.#bytes -= this.#sizeOf(value as V)
    return true
  }

  clear (): void {
    this.#entries.clear()
    this.#bytes = 0
  }
}
