import type { FileHandle } from 'node:fs/promises'
import type { ByteGate } from './byte-gate.ts'

/**
 * Reads exactly `length` bytes at `position` into a new buffer, however the
 * OS splits the read. When the file ends first, throws `ended(at)` with the
 * position where it ended: each format says so in its own words. A file whose
 * bytes may be absent until fetched (a block cache) has them asked of `gate` first.
 */
export async function readFully (handle: FileHandle, length: number, position: number, ended: (at: number) => Error, gate?: ByteGate): Promise<Buffer> {
  const release = await gate?.acquire(position, length)
  try {
    const buf = Buffer.allocUnsafe(length)
    for (let done = 0; done < length;) {
      const { bytesRead } = await handle.read(buf, done, length - done, position + done)
      if (bytesRead === 0) throw ended(position + done)
      done += bytesRead
    }
    return buf
  } finally {
    release?.()
  }
}
