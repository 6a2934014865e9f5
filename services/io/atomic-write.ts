import { randomBytes } from 'node:crypto'
import { open, rename, unlink, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

export interface AtomicWriteOptions {
  /** Where the temporary file goes (same filesystem as `path`); by default beside it. */
  tempDir?: string
}

/**
 * Writes `path` so that readers see the old file or the whole new one, never
 * a part: `content` goes to `<name>.<random>.part`, which is then renamed
 * over `path` (the last writer wins). `content` may be a function that fills
 * the temporary file itself (a download, a sparse image) and may throw to
 * keep `path` as it was. The temporary file never outlives the call.
 */
export async function writeAtomically (path: string, content: string | Uint8Array | ((tempPath: string) => Promise<void>),
  options: AtomicWriteOptions = {}): Promise<void> {
  const temp = join(options.tempDir ?? dirname(path), `${basename(path)}.${randomBytes(4).toString('hex')}.part`)
  try {
    if (typeof content === 'function') await content(temp)
    else await writeFile(temp, content)
    await rename(temp, path)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}

/** Makes the renames into `dir` durable, where the filesystem can sync a directory. */
export async function syncDirectory (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try { await fh.sync() } catch { /* not every filesystem syncs directories */ } finally { await fh.close() }
}
