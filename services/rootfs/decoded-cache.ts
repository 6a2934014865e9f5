/**
 * Recently decompressed blocks, least recently used first out, bounded in
 * bytes: sequential reads of a file decode each block once, and memory stays
 * bounded whatever the image says.
 */
export class DecodedCache {
  readonly #limit: number
  readonly #entries = new Map<string, Buffer>()
  #bytes = 0

  constructor (limitBytes: number) {
    this.#limit = limitBytes
  }

  /** The cached block if it holds at least `needed` bytes. */
  get (key: string, needed: number): Buffer | undefined {
    const hit = this.#entries.get(key)
    if (hit === undefined || hit.length < needed) return undefined
    this.#entries.delete(key)
    this.#entries.set(key, hit)
    return hit
  }

  set (key: string, data: Buffer): void {
    const old = this.#entries.get(key)
    if (old !== undefined) { this.#bytes -= old.length; this.#entries.delete(key) }
    this.#entries.set(key, data)
    this.#bytes += data.length
    while (this.#bytes > this.#limit && this.#entries.size > 1) {
      const [oldest, buf] = this.#entries.entries().next().value!
      this.#entries.delete(oldest)
      this.#bytes -= buf.length
    }
  }

  clear (): void {
    this.#entries.clear()
    this.#bytes = 0
  }
}
