import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { BootArtifacts } from '../coreos/pxe.ts'
import { writeAtomically } from '../io/atomic-write.ts'
import { isElf } from '../io/elf.ts'
import { extractNmstatectl, isNmstateArchiveOf, nmstateArchive } from './nmstate.ts'
import { nmstateArchiveFileName, nmstatectlFileName, type OsImageEntry } from './os-image-entry.ts'
import type { PreparedImage, StoreFollower, StoreLog } from './store-types.ts'

export interface NmstateCacheOptions {
  dataDir: string
  log: StoreLog
}

/** The binary, or why there is none. */
type Nmstatectl = { binary: Buffer, error?: never } | { binary?: never, error: string }

/**
 * The leader's nmstatectl archive for an entry that needs it, extracted once
 * and cached in DATA_DIR for the followers. A failure does not fail the image:
 * everything else of it serves, and requests that need nmstate get the reason
 * (logged once, here).
 */
export async function extractedNmstate (group: OsImageEntry, key: string, artifacts: BootArtifacts,
  options: NmstateCacheOptions): Promise<Pick<PreparedImage, 'nmstateArchive' | 'nmstateError'>> {
  const found = await cachedNmstatectl(group, key, artifacts, options)
  if (found.binary === undefined) return { nmstateError: found.error }
  return { nmstateArchive: await cachedArchive(group, key, found.binary, { ...options, saveForFollowers: true }) }
}

/** A follower's: what the leader cached in DATA_DIR before it said the image is ready, or the leader's reason. */
export async function leadersNmstate (group: OsImageEntry, key: string,
  options: NmstateCacheOptions & { leader: Pick<StoreFollower, 'nmstateError'> }): Promise<Pick<PreparedImage, 'nmstateArchive' | 'nmstateError'>> {
  const found = await leadersNmstatectl(group, key, options)
  if (found.binary === undefined) return { nmstateError: found.error }
  return { nmstateArchive: await cachedArchive(group, key, found.binary, { ...options, saveForFollowers: false }) }
}

/** nmstatectl from the DATA_DIR cache, else extracted from the ISO's rootfs and cached. */
async function cachedNmstatectl (group: OsImageEntry, key: string, artifacts: BootArtifacts, { dataDir, log }: NmstateCacheOptions): Promise<Nmstatectl> {
  const cache = join(dataDir, nmstatectlFileName(group))
  const binary = await readFile(cache).catch(() => undefined)
  if (binary !== undefined && isElf(binary)) return { binary }
  if (binary !== undefined) log.warn({ image: key, file: cache }, 'the cached nmstatectl is not an ELF binary; extracting it again')
  try {
    if (artifacts.rootfs === undefined) throw new Error('the ISO has no images/pxeboot/rootfs.img')
    const started = performance.now()
    const extracted = await extractNmstatectl(artifacts.rootfs)
    await writeAtomically(cache, extracted)
    log.info({ image: key, bytes: extracted.length, ms: Math.round(performance.now() - started) }, 'nmstatectl extracted from the live rootfs')
    return { binary: extracted }
  } catch (err) {
    const reason = (err as Error).message
    log.error({ image: key, error: reason }, 'nmstatectl not found: minimal ISOs and PXE initrds with static networking will fail for this image')
    return { error: reason }
  }
}

/**
 * In a worker: the binary the primary cached before it said the image is
 * ready. Searching a rootfs is CPU work no serving process should do, so a
 * missing one stays missing, for the primary's reason.
 */
async function leadersNmstatectl (group: OsImageEntry, key: string,
  { dataDir, log, leader }: NmstateCacheOptions & { leader: Pick<StoreFollower, 'nmstateError'> }): Promise<Nmstatectl> {
  const binary = await readFile(join(dataDir, nmstatectlFileName(group))).catch(() => undefined)
  if (binary !== undefined && isElf(binary)) return { binary }
  const leaders = leader.nmstateError(key)
  if (leaders !== undefined) return { error: leaders }
  log.warn({ image: key, file: nmstatectlFileName(group) }, 'the primary process left no nmstatectl in DATA_DIR')
  return { error: 'the primary process left no nmstatectl in DATA_DIR' }
}

/**
 * The gzip cpio of the binary, from DATA_DIR when it holds exactly that
 * binary; else compressed on the thread pool (never on a serving event
 * loop) and, by the primary, saved there for the workers.
 */
async function cachedArchive (group: OsImageEntry, key: string, binary: Buffer,
  { dataDir, log, saveForFollowers }: NmstateCacheOptions & { saveForFollowers: boolean }): Promise<Buffer> {
  const cache = join(dataDir, nmstateArchiveFileName(group))
  const cached = await readFile(cache).catch(() => undefined)
  if (cached !== undefined && await isNmstateArchiveOf(cached, binary)) return cached
  const started = performance.now()
  const archive = await nmstateArchive(binary)
  log.info({ image: key, bytes: archive.length, ms: Math.round(performance.now() - started) }, 'nmstatectl archive compressed')
  if (saveForFollowers) {
    // Without it the workers compress their own, off their event loops too.
    await writeAtomically(cache, archive).catch((err: unknown) => log.warn({ image: key, file: cache, error: (err as Error).message }, 'cannot cache the nmstatectl archive'))
  }
  return archive
}
