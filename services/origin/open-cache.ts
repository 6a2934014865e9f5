import { createHash } from 'node:crypto'
import { open, stat, unlink } from 'node:fs/promises'
import { writeAtomically } from '../io/atomic-write.ts'
import { BLOCK_SIZE, BlockCache, type BlockCacheOptions } from './block-cache.ts'
import { BlockRecord } from './block-record.ts'
import { OriginClient, type OriginClientOptions, type RangelessOrigin } from './origin-client.ts'

export interface OpenCacheOptions extends Omit<BlockCacheOptions, 'path' | 'record' | 'origin' | 'file'> {
  url: string
  client: OriginClientOptions
  /** The sparse cache file and its block record. */
  files: { cache: string, record: string }
  /** The entry's sha256, when configured: it then names the image's bytes, as it does for a downloaded one. */
  sha256?: string | undefined
  blockSize?: number
}

/**
 * The block cache of an image at its origin: the one in DATA_DIR when its
 * record describes the file the origin has now, else a new empty one (a new
 * sparse file at the full size and a new record, each renamed into place, so
 * that whoever still reads the old one keeps its bytes). An origin that cannot
 * be read by ranges gives the reason instead.
 */
export async function openBlockCache (options: OpenCacheOptions): Promise<BlockCache | RangelessOrigin> {
  const origin = new OriginClient(options.url, options.client)
  try {
    const file = await origin.probe(options.signal)
    if ('rangeless' in file) { origin.close(); return file }
    const header = {
      size: file.size,
      blockSize: options.blockSize ?? BLOCK_SIZE,
      validator: file.validator,
      // Known before any byte, the same on every replica and after the fill: ETags never change under a client.
      contentId: options.sha256 ?? createHash('sha256').update(`origin\0${file.validator}\0${file.size}`).digest('hex')
    }
    const existing = await BlockRecord.readHeader(options.files.record)
    const cacheSize = await stat(options.files.cache).then(s => s.size, () => undefined)
    if (JSON.stringify(existing) !== JSON.stringify(header) || cacheSize !== file.size) {
      // The record goes first: it must never describe a file it was not written for.
      await unlink(options.files.record).catch(() => {})
      await writeAtomically(options.files.cache, async temp => {
        const handle = await open(temp, 'wx')
        try { await handle.truncate(file.size) } finally { await handle.close() }
      })
    }
    const { record } = await BlockRecord.open(options.files.record, header)
    try {
      return await BlockCache.open({ ...options, path: options.files.cache, record, origin, file })
    } catch (err) {
      await record.close()
      throw err
    }
  } catch (err) {
    origin.close()
    throw err
  }
}
