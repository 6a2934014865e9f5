/** Gives back what `acquire` held. Calling it twice does nothing. */
export type Release = () => void

/**
 * The bytes of a file that may be absent until fetched: a sparse cache of an
 * image that lives at its origin. Whoever reads such a file asks first, and
 * holds what it reads until the bytes have left the process (a hole in a
 * sparse file reads as zeros: it must never be read, and bytes being sent must
 * never be evicted under the sender).
 */
export interface ByteGate {
  /**
   * Resolves once every byte of [offset, offset + length) is in the file, and
   * keeps it there until the release is called. `readAhead` bytes after the
   * range are fetched too, without being waited for. Rejects with a DomainError
   * when the bytes cannot be had in time.
   */
  acquire (offset: number, length: number, readAhead?: number): Promise<Release>
}
