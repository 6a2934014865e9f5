import { BoundedCache } from '../io/bounded-cache.ts'

/**
 * Recently decompressed blocks, least recently used first out, bounded in
 * bytes: sequential reads of a file decode each block once, and memory stays
 * bounded whatever the image says.
 */
export class DecodedCache {
  readonly #entries: BoundedCache<string, Buffer>

  constructor (limitBytes: number) {
    this.#entries = new BoundedCache({ maxBytes: limitBytes, sizeOf: data => data.length })
  }

  /** The cached block if it holds at least `needed` bytes. */
  get (key: string, needed: number): Buffer | undefined {
    const hit = this.#entries.peek(key)
    if (hit === undefined || hit.length < needed) return undefined
    return this.#entries.get(key)
  }

  set (key: string, data: Buffer): void {
    this.#entries.set(key, data)
  }

  clear (): void {
    this.#entries.clear()
  }
}
