import { readFile, stat } from 'node:fs/promises'
import type { FileIdentity } from '../iso9660/reader.ts'
import { writeAtomically } from '../io/atomic-write.ts'
import { fileSha256 } from '../io/file-hash.ts'
import type { StoreLog } from './store-types.ts'

/**
 * The sha256 a sidecar records for an ISO, when it still describes the file
 * (same size and mtime); undefined when it is missing, unreadable or stale.
 */
export async function savedContentId (sidecar: string, file: Pick<FileIdentity, 'size' | 'mtimeMs'>): Promise<string | undefined> {
  // A torn or foreign sidecar is no sidecar: it is rewritten once the file is hashed.
  const saved = await readFile(sidecar, 'utf8').then(text => JSON.parse(text) as { sha256?: unknown, size?: unknown, mtimeMs?: unknown } | null).catch(() => undefined)
  if (saved === undefined || saved === null || typeof saved.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(saved.sha256)) return undefined
  return saved.size === file.size && saved.mtimeMs === file.mtimeMs ? saved.sha256 : undefined
}

/** Records `sha256` for the ISO at `isoPath` as it is now. */
export async function saveContentId (sidecar: string, isoPath: string, sha256: string): Promise<void> {
  const { size, mtimeMs } = await stat(isoPath)
  await writeAtomically(sidecar, JSON.stringify({ sha256, size, mtimeMs }))
}

export interface ContentIdOptions {
  log: StoreLog
  /** The OS image key, for log lines. */
  key: string
}

/** The ISO's sha256, from its sidecar when that still describes the file, else computed once and saved there (by the leader). */
export async function contentId (file: FileIdentity, sidecar: string, options: ContentIdOptions): Promise<string> {
  const saved = await savedContentId(sidecar, file)
  if (saved !== undefined) return saved
  const started = performance.now()
  const sha256 = await fileSha256(file.path, file.size)
  options.log.info({ image: options.key, ms: Math.round(performance.now() - started) }, 'OS image content hashed')
  await saveContentId(sidecar, file.path, sha256)
  return sha256
}
