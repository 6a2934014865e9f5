import { FilesystemError } from '../errors.ts'
import { ELF_MAGIC, isElf } from '../io/elf.ts'
import { lookup, readFile, walk, type Inode, type ReadOnlyFilesystem } from './filesystem.ts'

const MAX_BINARY = 256 << 20
const BINARY_PATH = 'usr/bin/nmstatectl'

export interface FoundBinary {
  /** Where it was found, from the image root. */
  path: string
  data: Buffer
}

export interface SearchLimits {
  maxEntries: number
  maxDepth: number
}

const DEFAULT_LIMITS: SearchLimits = { maxEntries: 500_000, maxDepth: 16 }

/**
 * Finds nmstatectl where CoreOS keeps it. A live rootfs is an ostree physical
 * root: the OS's /usr lives in `ostree/deploy/<stateroot>/deploy/<checksum>.<serial>/`,
 * so that is searched first, then `usr/bin/nmstatectl` at the top (a plain
 * rootfs), then any `…/usr/bin/nmstatectl` in a bounded walk that never enters
 * the ostree object store. Only a regular ELF file is taken; symlinks resolve
 * inside the image.
 */
export async function findNmstatectl (fs: ReadOnlyFilesystem, limits: SearchLimits = DEFAULT_LIMITS): Promise<FoundBinary> {
  const rejected: string[] = []
  for (const path of [...await deploymentCandidates(fs), BINARY_PATH]) {
    const found = await accept(fs, path, rejected)
    if (found !== undefined) return found
  }
  for await (const entry of walk(fs, { ...limits, enter: e => e.path !== 'ostree/repo' })) {
    if (!entry.path.endsWith(`/${BINARY_PATH}`)) continue
    const found = await accept(fs, entry.path, rejected)
    if (found !== undefined) return found
  }
  const why = rejected.length > 0 ? `; rejected: ${rejected.join('; ')}` : ''
  throw new FilesystemError(`no nmstatectl binary in the ${fs.format} root filesystem${why}`)
}

async function deploymentCandidates (fs: ReadOnlyFilesystem): Promise<string[]> {
  const deployRoot = await lookup(fs, 'ostree/deploy')
  if (deployRoot?.stat.type !== 'dir') return []
  const paths: string[] = []
  for (const stateroot of (await fs.list(deployRoot)).filter(e => e.type === 'dir').map(e => e.name).sort()) {
    const deployments = await lookup(fs, `ostree/deploy/${stateroot}/deploy`)
    if (deployments?.stat.type !== 'dir') continue
    for (const deployment of (await fs.list(deployments)).filter(e => e.type === 'dir').map(e => e.name).sort()) {
      paths.push(`ostree/deploy/${stateroot}/deploy/${deployment}/${BINARY_PATH}`)
    }
  }
  return paths
}

async function accept (fs: ReadOnlyFilesystem, path: string, rejected: string[]): Promise<FoundBinary | undefined> {
  let inode: Inode | undefined
  try {
    inode = await lookup(fs, path, { follow: true })
  } catch (err) {
    rejected.push(`${path}: ${(err as Error).message}`)
    return undefined
  }
  if (inode === undefined) return undefined
  if (inode.stat.type !== 'file') { rejected.push(`${path} is a ${inode.stat.type}`); return undefined }
  if (inode.stat.size < ELF_MAGIC.length || inode.stat.size > MAX_BINARY) { rejected.push(`${path} has an implausible size of ${inode.stat.size} bytes`); return undefined }
  const head = await fs.read(inode, 0, ELF_MAGIC.length)
  if (!isElf(head)) { rejected.push(`${path} is not an ELF executable`); return undefined }
  return { path, data: await readFile(fs, inode, MAX_BINARY) }
}
