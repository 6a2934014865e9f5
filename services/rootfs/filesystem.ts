import { Readable } from 'node:stream'
import { FilesystemError } from '../errors.ts'

export type FileType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket'

export interface Stat {
  type: FileType
  /** Permission bits, setuid/setgid/sticky included (no file-type bits). */
  mode: number
  /** Bytes of a file, length of a symlink's target, size of a directory's data. */
  size: number
  uid: number
  gid: number
  nlink: number
  /** Identifies the inode within the image: hard links share it. */
  ino: number
}

/** An inode as a format reader loaded it; `stat` is common, the rest is the reader's. */
export interface Inode {
  readonly id: number
  readonly stat: Stat
}

export interface DirEntry {
  name: string
  type: FileType
  /** Pass to `inode()`. */
  id: number
}

/**
 * What squashfs and EROFS readers share: four primitives over a read-only
 * image. Path lookup, whole-file reads, streams and bounded walks are built
 * on them once, below.
 */
export interface ReadOnlyFilesystem {
  readonly format: 'squashfs' | 'erofs'
  readonly rootId: number
  inode (id: number): Promise<Inode>
  list (dir: Inode): Promise<DirEntry[]>
  readlink (link: Inode): Promise<string>
  /** `length` bytes of a regular file from `offset` (both within its size). */
  read (file: Inode, offset: number, length: number): Promise<Buffer>
  close (): Promise<void>
}

const MAX_SYMLINK_HOPS = 40

export interface LookupOptions {
  /** Follow symlinks (absolute targets resolve from the image's root, never the host's). */
  follow?: boolean
}

/** The inode at `path` (relative to the image root), or undefined when a component is missing. */
export async function lookup (fs: ReadOnlyFilesystem, path: string, options: LookupOptions = {}): Promise<Inode | undefined> {
  const pending = splitPath(path)
  const stack: Inode[] = [await fs.inode(fs.rootId)]
  let hops = 0
  while (pending.length > 0) {
    const name = pending.shift()!
    const current = stack[stack.length - 1]!
    if (name === '.') continue
    if (name === '..') { if (stack.length > 1) stack.pop(); continue }
    if (current.stat.type !== 'dir') return undefined
    const entry = (await fs.list(current)).find(e => e.name === name)
    if (entry === undefined) return undefined
    const inode = await fs.inode(entry.id)
    const isLast = pending.length === 0
    if (inode.stat.type === 'symlink' && (options.follow === true || !isLast)) {
      if (++hops > MAX_SYMLINK_HOPS) throw new FilesystemError(`too many symlinks resolving ${path}`)
      const target = await fs.readlink(inode)
      if (target.startsWith('/')) stack.length = 1
      pending.unshift(...splitPath(target))
      continue
    }
    stack.push(inode)
  }
  return stack[stack.length - 1]
}

function splitPath (path: string): string[] {
  return path.split('/').filter(part => part !== '')
}

/** A whole regular file; refuses files larger than `maxBytes`. */
export async function readFile (fs: ReadOnlyFilesystem, file: Inode, maxBytes: number): Promise<Buffer> {
  if (file.stat.type !== 'file') throw new FilesystemError(`inode ${file.id} is a ${file.stat.type}, not a regular file`)
  if (file.stat.size > maxBytes) throw new FilesystemError(`file of ${file.stat.size} bytes exceeds the ${maxBytes}-byte limit`)
  return await fs.read(file, 0, file.stat.size)
}

/** A regular file as a stream of chunks of at most `chunkSize` bytes. */
export function createReadStream (fs: ReadOnlyFilesystem, file: Inode, chunkSize = 1 << 20): Readable {
  if (file.stat.type !== 'file') throw new FilesystemError(`inode ${file.id} is a ${file.stat.type}, not a regular file`)
  let offset = 0
  return new Readable({
    highWaterMark: 1,
    objectMode: false,
    read () {
      if (offset >= file.stat.size) { this.push(null); return }
      const length = Math.min(chunkSize, file.stat.size - offset)
      fs.read(file, offset, length).then(chunk => {
        offset += length
        this.push(chunk)
      }, (err: unknown) => { this.destroy(err as Error) })
    }
  })
}

export interface WalkEntry {
  /** Path from the image root, without a leading slash ('' is the root). */
  path: string
  inode: Inode
  depth: number
}

export interface WalkOptions {
  /** Stop with an error after this many entries. */
  maxEntries: number
  /** Directories deeper than this are not entered. */
  maxDepth: number
  /** Return false to skip a directory's contents. */
  enter?: (entry: WalkEntry) => boolean
}

/**
 * Every entry under the root, depth first in directory order, without following
 * symlinks. A directory reached twice (a corrupt image's loop) is entered once.
 */
export async function * walk (fs: ReadOnlyFilesystem, options: WalkOptions): AsyncGenerator<WalkEntry> {
  const root = await fs.inode(fs.rootId)
  const seen = new Set<number>([root.id])
  const stack: WalkEntry[] = [{ path: '', inode: root, depth: 0 }]
  let count = 0
  while (stack.length > 0) {
    const entry = stack.pop()!
    if (++count > options.maxEntries) throw new FilesystemError(`more than ${options.maxEntries} entries in the image`)
    yield entry
    if (entry.inode.stat.type !== 'dir' || entry.depth >= options.maxDepth) continue
    if (options.enter !== undefined && !options.enter(entry)) continue
    const children: WalkEntry[] = []
    for (const child of await fs.list(entry.inode)) {
      const inode = await fs.inode(child.id)
      if (inode.stat.type === 'dir') {
        if (seen.has(inode.id)) continue
        seen.add(inode.id)
      }
      children.push({ path: entry.path === '' ? child.name : `${entry.path}/${child.name}`, inode, depth: entry.depth + 1 })
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!)
  }
}

/** Checks a directory entry name as both formats require of it. */
export function checkEntryName (name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new FilesystemError(`invalid directory entry name ${JSON.stringify(name)}`)
  }
}
