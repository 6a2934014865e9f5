import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'

const CHUNK = 1 << 20

/**
 * The hex SHA-256 of a file's first `length` bytes (all of it by default),
 * read in 1 MiB chunks. A file shorter than `length` is an error, not a
 * hash of what was there.
 */
export async function fileSha256 (path: string, length?: number): Promise<string> {
  const hash = createHash('sha256')
  const fh = await open(path, 'r')
  try {
    const size = length ?? (await fh.stat()).size
    const buffer = Buffer.allocUnsafe(Math.min(CHUNK, size))
    for (let offset = 0; offset < size;) {
      const { bytesRead } = await fh.read(buffer, 0, Math.min(buffer.length, size - offset), offset)
      if (bytesRead === 0) throw new Error(`${path} ended early`)
      hash.update(buffer.subarray(0, bytesRead))
      offset += bytesRead
    }
  } finally {
    await fh.close()
  }
  return hash.digest('hex')
}
