import { decompressBlock, CompressionError, type Codec } from '../compression/index.ts'
import type { ByteSource } from './byte-source.ts'
import { DecodedCache } from './decoded-cache.ts'
import { BoundedCache } from '../io/bounded-cache.ts'
import { FilesystemError } from '../errors.ts'
import { checkEntryName, type DirEntry, type FileType, type Inode, type ReadOnlyFilesystem, type Stat } from './filesystem.ts'
import { hasMagic, SQUASHFS_MAGIC } from './magic.ts'

/**
 * squashfs 4.0, read in place (layout: squashfs-tools' squashfs_fs.h): metadata
 * blocks, basic and extended inodes, directory tables, fragments, data and
 * sparse blocks. Compressors gzip, xz, lz4 and zstd; xattrs are not read.
 */

const METADATA_SIZE = 8192
const METADATA_UNCOMPRESSED = 0x8000
const DATA_UNCOMPRESSED = 1 << 24
const NO_FRAGMENT = 0xFFFFFFFF

const COMPRESSORS = new Map<number, Codec>([[1, 'zlib'], [4, 'xz'], [5, 'lz4'], [6, 'zstd']])
const COMPRESSOR_NAMES = new Map([[1, 'gzip'], [2, 'lzma'], [3, 'lzo'], [4, 'xz'], [5, 'lz4'], [6, 'zstd']])

const TYPES: Record<number, FileType> = { 1: 'dir', 2: 'file', 3: 'symlink', 4: 'block', 5: 'char', 6: 'fifo', 7: 'socket' }
const MAX_DIR_SIZE = 64 << 20
const MAX_SYMLINK = 4096
const READ_RUN = 8 << 20

export interface SquashfsInode extends Inode {
  /** Directories: where the listing starts in the directory table, and its size. */
  readonly dirBlock?: number
  readonly dirOffset?: number
  /** Regular files: first data block, per-block sizes, and the tail fragment. */
  readonly startBlock?: number
  readonly blockSizes?: Uint32Array
  readonly fragment?: number
  readonly fragmentOffset?: number
  /** Symlinks. */
  readonly target?: string
}

interface Superblock {
  inodes: number
  blockSize: number
  fragments: number
  compressor: number
  flags: number
  ids: number
  rootInode: number
  bytesUsed: number
  idTable: number
  inodeTable: number
  directoryTable: number
  fragmentTable: number
}

/** A cursor over the metadata stream: a chain of ≤ 8 KiB blocks, each with a 2-byte header. */
interface MetaPosition { block: number, offset: number }

export class SquashfsFilesystem implements ReadOnlyFilesystem {
  readonly format = 'squashfs'
  readonly rootId: number
  readonly blockSize: number
  readonly #source: ByteSource
  readonly #sb: Superblock
  readonly #codec: Codec
  readonly #meta = new BoundedCache<number, { data: Buffer, next: number }>({ maxEntries: 512 })
  readonly #decoded = new DecodedCache(16 << 20)
  #ids: number[] = []

  private constructor (source: ByteSource, sb: Superblock, codec: Codec) {
    this.#source = source
    this.#sb = sb
    this.#codec = codec
    this.rootId = sb.rootInode
    this.blockSize = sb.blockSize
  }

  static async open (source: ByteSource): Promise<SquashfsFilesystem> {
    const raw = await source.read(0, 96, 'squashfs superblock')
    if (!hasMagic(raw, SQUASHFS_MAGIC)) throw new FilesystemError('not a squashfs image (bad superblock magic)')
    const major = raw.readUInt16LE(28)
    const minor = raw.readUInt16LE(30)
    if (major !== 4 || minor !== 0) throw new FilesystemError(`squashfs: unsupported version ${major}.${minor}`)
    const u64 = (at: number): number => {
      const v = raw.readBigUInt64LE(at)
      if (v === 0xFFFFFFFFFFFFFFFFn) return -1
      if (v > BigInt(source.length)) throw new FilesystemError(`squashfs: superblock field at ${at} points outside the image`)
      return Number(v)
    }
    const sb: Superblock = {
      inodes: raw.readUInt32LE(4),
      blockSize: raw.readUInt32LE(12),
      fragments: raw.readUInt32LE(16),
      compressor: raw.readUInt16LE(20),
      flags: raw.readUInt16LE(24),
      ids: raw.readUInt16LE(26),
      rootInode: Number(raw.readBigUInt64LE(32) & 0xFFFFFFFFFFFFn),
      bytesUsed: u64(40),
      idTable: u64(48),
      inodeTable: u64(64),
      directoryTable: u64(72),
      fragmentTable: u64(80)
    }
    const blockLog = raw.readUInt16LE(22)
    if (sb.blockSize < 4096 || sb.blockSize > (1 << 20) || sb.blockSize !== 2 ** blockLog) throw new FilesystemError(`squashfs: invalid block size ${sb.blockSize}`)
    if (sb.bytesUsed < 96 || sb.inodeTable < 0 || sb.directoryTable < sb.inodeTable) throw new FilesystemError('squashfs: corrupt table positions in the superblock')
    const codec = COMPRESSORS.get(sb.compressor)
    if (codec === undefined) {
      throw new FilesystemError(`squashfs: unsupported compressor ${COMPRESSOR_NAMES.get(sb.compressor) ?? `#${sb.compressor}`}`)
    }
    const fs = new SquashfsFilesystem(source, sb, codec)
    await fs.#loadIds()
    return fs
  }

  async #loadIds (): Promise<void> {
    const count = this.#sb.ids
    if (count === 0 || this.#sb.idTable < 0) return
    const blocks = Math.ceil((count * 4) / METADATA_SIZE)
    const pointers = await this.#source.read(this.#sb.idTable, blocks * 8, 'squashfs id table')
    const ids: number[] = []
    for (let b = 0; b < blocks; b++) {
      const block = await this.#metaBlock(Number(pointers.readBigUInt64LE(b * 8)))
      for (let at = 0; at + 4 <= block.data.length && ids.length < count; at += 4) ids.push(block.data.readUInt32LE(at))
    }
    this.#ids = ids
  }

  async #metaBlock (position: number): Promise<{ data: Buffer, next: number }> {
    const hit = this.#meta.peek(position)
    if (hit !== undefined) return hit
    const header = (await this.#source.read(position, 2, 'squashfs metadata header')).readUInt16LE(0)
    const length = header & ~METADATA_UNCOMPRESSED
    if (length === 0 || length > METADATA_SIZE) throw new FilesystemError(`squashfs: metadata block at ${position} claims ${length} bytes`)
    const stored = await this.#source.read(position + 2, length, 'squashfs metadata block')
    const data = (header & METADATA_UNCOMPRESSED) !== 0 ? stored : this.#inflate(stored, METADATA_SIZE, `metadata block at ${position}`)
    const block = { data, next: position + 2 + length }
    this.#meta.set(position, block)
    return block
  }

  /** `length` bytes of the metadata stream from `at`, which advances past them. */
  async #metaRead (at: MetaPosition, length: number, what: string): Promise<Buffer> {
    const parts: Buffer[] = []
    let remaining = length
    while (remaining > 0) {
      const block = await this.#metaBlock(at.block)
      if (at.offset >= block.data.length) {
        if (at.offset > block.data.length) throw new FilesystemError(`squashfs: ${what} starts past its metadata block`)
        at.block = block.next
        at.offset = 0
        continue
      }
      const n = Math.min(remaining, block.data.length - at.offset)
      parts.push(block.data.subarray(at.offset, at.offset + n))
      remaining -= n
      at.offset += n
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
  }

  #inflate (input: Buffer, limit: number, what: string): Buffer {
    try {
      return decompressBlock(this.#codec, input, limit)
    } catch (err) {
      if (err instanceof CompressionError) throw new FilesystemError(`squashfs: ${what}: ${err.message}`)
      throw err
    }
  }

  #id (index: number): number {
    const id = this.#ids[index]
    if (id === undefined) throw new FilesystemError(`squashfs: uid/gid index ${index} is not in the id table`)
    return id
  }

  async inode (ref: number): Promise<SquashfsInode> {
    const at: MetaPosition = { block: this.#sb.inodeTable + Math.floor(ref / 65536), offset: ref % 65536 }
    if (at.block >= this.#sb.directoryTable) throw new FilesystemError(`squashfs: inode reference ${ref} is outside the inode table`)
    const h = await this.#metaRead(at, 16, `inode ${ref}`)
    const kind = h.readUInt16LE(0)
    const basic = kind <= 7 ? kind : kind - 7
    const type = TYPES[basic]
    if (type === undefined || kind > 14) throw new FilesystemError(`squashfs: inode ${ref} has unknown type ${kind}`)
    const extended = kind > 7
    const stat: Stat = {
      type,
      mode: h.readUInt16LE(2) & 0o7777,
      size: 0,
      uid: this.#id(h.readUInt16LE(4)),
      gid: this.#id(h.readUInt16LE(6)),
      nlink: 1,
      ino: h.readUInt32LE(12)
    }
    switch (type) {
      case 'dir': {
        if (!extended) {
          const b = await this.#metaRead(at, 16, `inode ${ref}`)
          stat.nlink = b.readUInt32LE(4)
          stat.size = b.readUInt16LE(8)
          return { id: ref, stat, dirBlock: b.readUInt32LE(0), dirOffset: b.readUInt16LE(10) }
        }
        const b = await this.#metaRead(at, 24, `inode ${ref}`)
        stat.nlink = b.readUInt32LE(0)
        stat.size = b.readUInt32LE(4)
        return { id: ref, stat, dirBlock: b.readUInt32LE(8), dirOffset: b.readUInt16LE(18) }
      }
      case 'file': {
        let startBlock: number, fragment: number, fragmentOffset: number
        if (!extended) {
          const b = await this.#metaRead(at, 16, `inode ${ref}`)
          startBlock = b.readUInt32LE(0)
          fragment = b.readUInt32LE(4)
          fragmentOffset = b.readUInt32LE(8)
          stat.size = b.readUInt32LE(12)
        } else {
          const b = await this.#metaRead(at, 40, `inode ${ref}`)
          const start = b.readBigUInt64LE(0)
          const size = b.readBigUInt64LE(8)
          if (start > BigInt(this.#source.length) || size > BigInt(Number.MAX_SAFE_INTEGER)) throw new FilesystemError(`squashfs: inode ${ref} has absurd extents`)
          startBlock = Number(start)
          stat.size = Number(size)
          stat.nlink = b.readUInt32LE(24)
          fragment = b.readUInt32LE(28)
          fragmentOffset = b.readUInt32LE(32)
        }
        const hasFragment = fragment !== NO_FRAGMENT
        const blocks = hasFragment ? Math.floor(stat.size / this.blockSize) : Math.ceil(stat.size / this.blockSize)
        if (blocks * 4 > this.#source.length) throw new FilesystemError(`squashfs: inode ${ref} claims ${stat.size} bytes`)
        if (hasFragment && fragment >= this.#sb.fragments) throw new FilesystemError(`squashfs: inode ${ref} refers to fragment ${fragment} of ${this.#sb.fragments}`)
        if (hasFragment && fragmentOffset + stat.size % this.blockSize > this.blockSize) throw new FilesystemError(`squashfs: inode ${ref} has a fragment past its block`)
        const list = await this.#metaRead(at, blocks * 4, `block list of inode ${ref}`)
        const blockSizes = new Uint32Array(blocks)
        for (let i = 0; i < blocks; i++) blockSizes[i] = list.readUInt32LE(i * 4)
        return { id: ref, stat, startBlock, blockSizes, fragment, fragmentOffset }
      }
      case 'symlink': {
        const b = await this.#metaRead(at, 8, `inode ${ref}`)
        stat.nlink = b.readUInt32LE(0)
        stat.size = b.readUInt32LE(4)
        if (stat.size > MAX_SYMLINK) throw new FilesystemError(`squashfs: symlink ${ref} target is too long`)
        const target = (await this.#metaRead(at, stat.size, `symlink ${ref}`)).toString('utf8')
        return { id: ref, stat, target }
      }
      default: {
        const b = await this.#metaRead(at, 4, `inode ${ref}`)
        stat.nlink = b.readUInt32LE(0)
        return { id: ref, stat }
      }
    }
  }

  async list (dir: Inode): Promise<DirEntry[]> {
    const inode = dir as SquashfsInode
    if (inode.stat.type !== 'dir' || inode.dirBlock === undefined) throw new FilesystemError(`squashfs: inode ${dir.id} is not a directory`)
    // The stored size counts 3 bytes for the "." and ".." entries that are not stored.
    const size = inode.stat.size - 3
    if (size <= 0) return []
    if (size > MAX_DIR_SIZE) throw new FilesystemError(`squashfs: directory ${dir.id} claims ${size} bytes`)
    const at: MetaPosition = { block: this.#sb.directoryTable + inode.dirBlock, offset: inode.dirOffset! }
    if (at.block >= this.#source.length) throw new FilesystemError(`squashfs: directory ${dir.id} starts outside the image`)
    const data = await this.#metaRead(at, size, `directory ${dir.id}`)
    const entries: DirEntry[] = []
    let p = 0
    while (p < size) {
      if (p + 12 > size) throw new FilesystemError(`squashfs: directory ${dir.id} has a truncated header`)
      const count = data.readUInt32LE(p) + 1
      const startBlock = data.readUInt32LE(p + 4)
      p += 12
      if (count > 256) throw new FilesystemError(`squashfs: directory ${dir.id} header claims ${count} entries`)
      for (let i = 0; i < count; i++) {
        if (p + 8 > size) throw new FilesystemError(`squashfs: directory ${dir.id} has a truncated entry`)
        const offset = data.readUInt16LE(p)
        const type = TYPES[data.readUInt16LE(p + 4)]
        const nameLength = data.readUInt16LE(p + 6) + 1
        p += 8
        if (p + nameLength > size) throw new FilesystemError(`squashfs: directory ${dir.id} has a truncated name`)
        const name = data.toString('utf8', p, p + nameLength)
        p += nameLength
        checkEntryName(name)
        if (type === undefined) throw new FilesystemError(`squashfs: directory ${dir.id} has an entry of unknown type`)
        entries.push({ name, type, id: startBlock * 65536 + offset })
      }
    }
    return entries
  }

  async readlink (link: Inode): Promise<string> {
    const inode = link as SquashfsInode
    if (inode.target === undefined) throw new FilesystemError(`squashfs: inode ${link.id} is not a symlink`)
    return inode.target
  }

  async read (file: Inode, offset: number, length: number): Promise<Buffer> {
    const inode = file as SquashfsInode
    if (inode.blockSizes === undefined) throw new FilesystemError(`squashfs: inode ${file.id} is not a regular file`)
    if (offset < 0 || length < 0 || offset + length > inode.stat.size) throw new FilesystemError(`squashfs: read outside inode ${file.id}`)
    const out = Buffer.allocUnsafe(length)
    const bs = this.blockSize
    let done = 0
    let index = Math.floor(offset / bs)
    // Byte position of block `index`: the sum of the stored sizes before it.
    let position = inode.startBlock!
    for (let i = 0; i < index && i < inode.blockSizes.length; i++) position += inode.blockSizes[i]! & ~DATA_UNCOMPRESSED
    const lastBlock = Math.min(inode.blockSizes.length - 1, Math.floor((offset + length - 1) / bs))
    // Consecutive blocks lie back to back: read them in runs of up to READ_RUN bytes, not one by one.
    let run: Buffer | undefined
    let runStart = 0
    while (done < length) {
      const at = offset + done
      const within = at - index * bs
      const n = Math.min(length - done, bs - within)
      let block: Buffer
      if (index < inode.blockSizes.length) {
        const stored = inode.blockSizes[index]!
        const expected = Math.min(bs, inode.stat.size - index * bs)
        const size = stored & ~DATA_UNCOMPRESSED
        let raw: Buffer | undefined
        if (size > 0 && size <= bs && this.#decoded.get(`${position}`, 0) === undefined) {
          if (run === undefined || position < runStart || position + size > runStart + run.length) {
            let end = position
            for (let i = index; i <= lastBlock && end - position < READ_RUN; i++) end += Math.min(bs, inode.blockSizes[i]! & ~DATA_UNCOMPRESSED)
            run = await this.#source.read(position, end - position, `squashfs data of inode ${file.id}`)
            runStart = position
          }
          raw = run.subarray(position - runStart, position - runStart + size)
        }
        block = await this.#dataBlock(position, stored, expected, `block ${index} of inode ${file.id}`, raw)
        position += stored & ~DATA_UNCOMPRESSED
      } else {
        block = await this.#fragmentBytes(inode)
      }
      if (within + n > block.length) throw new FilesystemError(`squashfs: block ${index} of inode ${file.id} is shorter than the file says`)
      block.copy(out, done, within, within + n)
      done += n
      index++
    }
    return out
  }

  async #dataBlock (position: number, stored: number, expected: number, what: string, preloaded?: Buffer): Promise<Buffer> {
    const size = stored & ~DATA_UNCOMPRESSED
    if (size === 0) return Buffer.alloc(expected) // sparse
    if (size > this.blockSize) throw new FilesystemError(`squashfs: ${what} claims ${size} stored bytes`)
    const key = `${position}`
    const hit = this.#decoded.get(key, 0)
    if (hit !== undefined) return hit
    const raw = preloaded ?? await this.#source.read(position, size, `squashfs ${what}`)
    // An uncompressed block from a read run is copied, so the cache never pins a whole run.
    const data = (stored & DATA_UNCOMPRESSED) !== 0 ? (preloaded !== undefined ? Buffer.from(raw) : raw) : this.#inflate(raw, this.blockSize, what)
    this.#decoded.set(key, data)
    return data
  }

  async #fragmentBytes (inode: SquashfsInode): Promise<Buffer> {
    const index = inode.fragment!
    if (index === NO_FRAGMENT) throw new FilesystemError(`squashfs: inode ${inode.id} has no fragment for its tail`)
    const table = this.#sb.fragmentTable
    if (table < 0) throw new FilesystemError('squashfs: image has no fragment table')
    const pointer = await this.#source.read(table + Math.floor(index / 512) * 8, 8, 'squashfs fragment table')
    const entry = await this.#metaRead({ block: Number(pointer.readBigUInt64LE(0) & 0xFFFFFFFFFFFFn), offset: (index % 512) * 16 }, 16, `fragment ${index}`)
    const start = Number(entry.readBigUInt64LE(0) & 0xFFFFFFFFFFFFn)
    const block = await this.#dataBlock(start, entry.readUInt32LE(8), this.blockSize, `fragment ${index}`)
    const tail = inode.stat.size % this.blockSize
    const from = inode.fragmentOffset!
    if (from + tail > block.length) throw new FilesystemError(`squashfs: fragment ${index} is shorter than inode ${inode.id} needs`)
    return block.subarray(from, from + tail)
  }

  async close (): Promise<void> {
    this.#meta.clear()
    this.#decoded.clear()
    await this.#source.close()
  }
}
