import { decompressBlock, CompressionError, type Codec } from '../compression/index.ts'
import type { ByteSource } from './byte-source.ts'
import { FilesystemError } from '../errors.ts'
import { checkEntryName, type DirEntry, type FileType, type Inode, type ReadOnlyFilesystem, type Stat } from './filesystem.ts'
import { DecodedCache } from './decoded-cache.ts'
import { readErofsSuperblock, type ErofsSuperblock } from './erofs-superblock.ts'

/**
 * EROFS, read in place (layout: erofs-utils' include/erofs_fs.h). Uncompressed
 * (flat, inline tail, chunk-based) and compressed inodes (full and compact
 * lcluster indexes, big pclusters, ztailpacking, fragments and the packed
 * inode, dedupe, plain/interlaced pclusters) with lz4, lzma, deflate and zstd.
 */

const LAYOUT_FLAT_PLAIN = 0
const LAYOUT_COMPRESSED_FULL = 1
const LAYOUT_FLAT_INLINE = 2
const LAYOUT_COMPRESSED_COMPACT = 3
const LAYOUT_CHUNK_BASED = 4

const CHUNK_FORMAT_BLKBITS = 0x1f
const CHUNK_FORMAT_INDEXES = 0x20
const CHUNK_FORMAT_48BIT = 0x40

const ADVISE_COMPACTED_2B = 0x0001
const ADVISE_EXTENTS = 0x0001
const ADVISE_BIG_PCLUSTER_1 = 0x0002
const ADVISE_BIG_PCLUSTER_2 = 0x0004
const ADVISE_INLINE_PCLUSTER = 0x0008
const ADVISE_INTERLACED_PCLUSTER = 0x0010
const ADVISE_FRAGMENT_PCLUSTER = 0x0020

const LCLUSTER_PLAIN = 0
const LCLUSTER_HEAD1 = 1
const LCLUSTER_NONHEAD = 2
const LCLUSTER_HEAD2 = 3
const LI_PARTIAL_REF = 1 << 15
const LI_D0_CBLKCNT = 1 << 11

const ALGORITHMS: Array<Codec | undefined> = ['lz4', 'microlzma', 'deflate', 'zstd']
const ALGORITHM_NAMES = ['lz4', 'lzma', 'deflate', 'zstd']
const PCLUSTER_MAX_SIZE = 1 << 20
const PCLUSTER_MAX_DSIZE = 12 << 20
const MAX_DIR_SIZE = 64 << 20

const FILE_TYPES: Record<number, FileType> = { 0o10: 'file', 0o04: 'dir', 0o12: 'symlink', 0o02: 'char', 0o06: 'block', 0o01: 'fifo', 0o14: 'socket' }

interface CompressionInfo {
  /** The whole file lives in the packed inode at this offset (the 8-byte map header form). */
  wholeFragment?: number
  advise: number
  lclusterBits: number
  algorithms: [number, number]
  /** Tail fragment offset in the packed inode (FRAGMENT_PCLUSTER). */
  fragmentOffset: number
  /** Size of the inline (ztailpacking) pcluster. */
  inlineSize: number
  /** Where the inline pcluster starts, once the tail has been mapped. */
  inlinePosition: number
  tailHeadLcn: number
}

export interface ErofsInode extends Inode {
  readonly layout: number
  readonly position: number
  /** Where data after the inode header and inline xattrs starts. */
  readonly dataPosition: number
  /** The i_u union: start block (flat), chunk format (chunk-based), block count (compressed). */
  readonly rawU: number
  z?: CompressionInfo
}

interface Lcluster {
  lcn: number
  type: number
  clusterofs: number
  delta0: number
  delta1: number
  pblk: number
  compressedBlocks: number
  partialRef: boolean
  nextPackOffset: number
}

function blankLcluster (lcn: number, type: number, nextPackOffset: number): Lcluster {
  return { lcn, type, clusterofs: 0, delta0: 0, delta1: 0, pblk: 0, compressedBlocks: 0, partialRef: false, nextPackOffset }
}

type ExtentKind = 'pcluster' | 'inline' | 'fragment'
type StoredForm = 'shifted' | 'interlaced' | Codec

interface Extent {
  la: number
  llen: number
  kind: ExtentKind
  /** Byte position of the pcluster (or of the inline pcluster). */
  pa: number
  plen: number
  form: StoredForm
  partial: boolean
}

export class ErofsFilesystem implements ReadOnlyFilesystem {
  readonly format = 'erofs'
  readonly rootId: number
  readonly blockBits: number
  readonly blockSize: number
  readonly superblock: ErofsSuperblock
  readonly #source: ByteSource
  readonly #metaBase: number
  #packed: ErofsInode | undefined
  readonly #decoded = new DecodedCache(32 << 20)

  private constructor (source: ByteSource, sb: ErofsSuperblock) {
    this.#source = source
    this.superblock = sb
    this.blockBits = sb.blkszbits
    this.blockSize = 1 << sb.blkszbits
    this.rootId = sb.rootNid
    this.#metaBase = sb.metaBlkaddr * this.blockSize
  }

  static async open (source: ByteSource): Promise<ErofsFilesystem> {
    const fs = new ErofsFilesystem(source, await readErofsSuperblock(source))
    if (fs.superblock.packedNid !== 0) fs.#packed = await fs.inode(fs.superblock.packedNid)
    return fs
  }

  async inode (nid: number): Promise<ErofsInode> {
    const position = this.#metaBase + nid * 32
    if (!Number.isSafeInteger(position)) throw new FilesystemError(`erofs: nid ${nid} out of range`)
    const head = await this.#source.read(position, 32, `erofs inode ${nid}`)
    const format = head.readUInt16LE(0)
    const extended = (format & 1) === 1
    const layout = (format >> 1) & 7
    if (layout > LAYOUT_CHUNK_BASED) throw new FilesystemError(`erofs: inode ${nid} has unknown data layout ${layout}`)
    const raw = extended ? await this.#source.read(position, 64, `erofs inode ${nid}`) : head
    const xattrCount = raw.readUInt16LE(2)
    const xattrSize = xattrCount === 0 ? 0 : 12 + 4 * (xattrCount - 1)
    const modeBits = raw.readUInt16LE(4)
    const type = FILE_TYPES[modeBits >> 12]
    if (type === undefined) throw new FilesystemError(`erofs: inode ${nid} has invalid mode 0${modeBits.toString(8)}`)
    const size = extended ? Number(raw.readBigUInt64LE(8)) : raw.readUInt32LE(8)
    if (!Number.isSafeInteger(size)) throw new FilesystemError(`erofs: inode ${nid} has an absurd size`)
    const stat: Stat = {
      type,
      mode: modeBits & 0o7777,
      size,
      uid: extended ? raw.readUInt32LE(24) : raw.readUInt16LE(24),
      gid: extended ? raw.readUInt32LE(28) : raw.readUInt16LE(26),
      nlink: extended ? raw.readUInt32LE(44) : raw.readUInt16LE(6),
      ino: nid
    }
    const inodeSize = extended ? 64 : 32
    return {
      id: nid,
      stat,
      layout,
      position,
      dataPosition: position + inodeSize + xattrSize,
      rawU: raw.readUInt32LE(16)
    }
  }

  async list (dir: Inode): Promise<DirEntry[]> {
    const inode = dir as ErofsInode
    if (inode.stat.type !== 'dir') throw new FilesystemError(`erofs: inode ${dir.id} is not a directory`)
    const size = inode.stat.size
    if (size > MAX_DIR_SIZE) throw new FilesystemError(`erofs: directory ${dir.id} claims ${size} bytes`)
    const entries: DirEntry[] = []
    for (let offset = 0; offset < size; offset += this.blockSize) {
      const block = await this.read(inode, offset, Math.min(this.blockSize, size - offset))
      this.#parseDirBlock(block, dir.id, entries)
    }
    return entries
  }

  #parseDirBlock (block: Buffer, nid: number, into: DirEntry[]): void {
    if (block.length < 12) throw new FilesystemError(`erofs: directory ${nid} has a truncated block`)
    const firstNameOff = block.readUInt16LE(8)
    if (firstNameOff % 12 !== 0 || firstNameOff < 12 || firstNameOff > block.length) throw new FilesystemError(`erofs: directory ${nid} has a corrupt block`)
    const count = firstNameOff / 12
    for (let i = 0; i < count; i++) {
      const at = i * 12
      const nidValue = block.readBigUInt64LE(at)
      const nameOff = block.readUInt16LE(at + 8)
      const fileType = block[at + 10]!
      let nameEnd = i + 1 < count ? block.readUInt16LE(at + 20) : block.length
      if (nameOff > nameEnd || nameEnd > block.length) throw new FilesystemError(`erofs: directory ${nid} has a corrupt name offset`)
      if (i + 1 === count) {
        const nul = block.indexOf(0, nameOff)
        if (nul !== -1 && nul < nameEnd) nameEnd = nul
      }
      const name = block.toString('utf8', nameOff, nameEnd)
      if (name === '.' || name === '..') continue
      checkEntryName(name)
      if (nidValue > BigInt(Number.MAX_SAFE_INTEGER) / 32n) throw new FilesystemError(`erofs: directory ${nid} names an out-of-range nid`)
      const type: FileType = (['file', 'file', 'dir', 'char', 'block', 'fifo', 'socket', 'symlink'] as const)[fileType] ?? 'file'
      into.push({ name, type, id: Number(nidValue) })
    }
  }

  async readlink (link: Inode): Promise<string> {
    if (link.stat.type !== 'symlink') throw new FilesystemError(`erofs: inode ${link.id} is not a symlink`)
    if (link.stat.size > 4096) throw new FilesystemError(`erofs: symlink ${link.id} target is too long`)
    return (await this.read(link, 0, link.stat.size)).toString('utf8')
  }

  async read (file: Inode, offset: number, length: number): Promise<Buffer> {
    const inode = file as ErofsInode
    if (offset < 0 || length < 0 || offset + length > inode.stat.size) throw new FilesystemError(`erofs: read outside inode ${inode.id}`)
    if (length === 0) return Buffer.alloc(0)
    switch (inode.layout) {
      case LAYOUT_FLAT_PLAIN:
      case LAYOUT_FLAT_INLINE:
        return await this.#readFlat(inode, offset, length)
      case LAYOUT_CHUNK_BASED:
        return await this.#readChunked(inode, offset, length)
      default:
        return await this.#readCompressed(inode, offset, length)
    }
  }

  async #readFlat (inode: ErofsInode, offset: number, length: number): Promise<Buffer> {
    const blocks = Math.ceil(inode.stat.size / this.blockSize)
    const tailStart = (blocks - (inode.layout === LAYOUT_FLAT_INLINE ? 1 : 0)) * this.blockSize
    const parts: Buffer[] = []
    const end = offset + length
    if (offset < tailStart) {
      const n = Math.min(end, tailStart) - offset
      parts.push(await this.#source.read(inode.rawU * this.blockSize + offset, n, `erofs data of inode ${inode.id}`))
    }
    if (end > tailStart) {
      const from = Math.max(offset, tailStart)
      parts.push(await this.#source.read(inode.dataPosition + (from - tailStart), end - from, `erofs inline data of inode ${inode.id}`))
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
  }

  async #readChunked (inode: ErofsInode, offset: number, length: number): Promise<Buffer> {
    const format = inode.rawU & 0xffff
    if ((format & CHUNK_FORMAT_48BIT) !== 0) throw new FilesystemError('erofs: unsupported 48-bit chunk indexes')
    const chunkBits = this.blockBits + (format & CHUNK_FORMAT_BLKBITS)
    if (chunkBits > 40) throw new FilesystemError(`erofs: inode ${inode.id} has an absurd chunk size`)
    const chunkSize = 2 ** chunkBits
    const unit = (format & CHUNK_FORMAT_INDEXES) !== 0 ? 8 : 4
    const tableStart = Math.ceil(inode.dataPosition / unit) * unit
    const out = Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const at = offset + done
      const chunk = Math.floor(at / chunkSize)
      const entry = await this.#source.read(tableStart + chunk * unit, unit, `erofs chunk index of inode ${inode.id}`)
      const block = unit === 8 ? entry.readUInt32LE(4) : entry.readUInt32LE(0)
      const within = at - chunk * chunkSize
      const n = Math.min(length - done, chunkSize - within)
      if (block === 0xFFFFFFFF) out.fill(0, done, done + n)
      else (await this.#source.read(block * this.blockSize + within, n, `erofs chunk of inode ${inode.id}`)).copy(out, done)
      done += n
    }
    return out
  }

  // Compressed inodes -------------------------------------------------------

  async #compression (inode: ErofsInode): Promise<CompressionInfo> {
    if (inode.z !== undefined) return inode.z
    const headerPos = Math.ceil(inode.dataPosition / 8) * 8
    const h = await this.#source.read(headerPos, 8, `erofs map header of inode ${inode.id}`)
    if ((h[7]! & 0x80) !== 0) {
      const offset = h.readBigUInt64LE(0) & ((1n << 63n) - 1n)
      if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new FilesystemError(`erofs: inode ${inode.id} has an absurd fragment offset`)
      inode.z = {
        wholeFragment: Number(offset),
        advise: ADVISE_FRAGMENT_PCLUSTER,
        lclusterBits: this.blockBits,
        algorithms: [0, 0],
        fragmentOffset: 0,
        inlineSize: 0,
        inlinePosition: 0,
        tailHeadLcn: 0
      }
      return inode.z
    }
    const advise = h.readUInt16LE(4)
    if (inode.layout === LAYOUT_COMPRESSED_FULL && (advise & ADVISE_EXTENTS) !== 0) {
      throw new FilesystemError(`erofs: inode ${inode.id} uses extent records, which this reader does not support`)
    }
    const z: CompressionInfo = {
      advise,
      lclusterBits: this.blockBits + (h[7]! & 15),
      algorithms: [h[6]! & 15, h[6]! >> 4],
      fragmentOffset: (advise & ADVISE_FRAGMENT_PCLUSTER) !== 0 ? h.readUInt32LE(0) : 0,
      inlineSize: (advise & ADVISE_FRAGMENT_PCLUSTER) === 0 && (advise & ADVISE_INLINE_PCLUSTER) !== 0 ? h.readUInt16LE(2) : 0,
      inlinePosition: 0,
      tailHeadLcn: -1
    }
    if (z.lclusterBits > 30) throw new FilesystemError(`erofs: inode ${inode.id} has an absurd cluster size`)
    if (inode.layout === LAYOUT_COMPRESSED_COMPACT && ((advise & ADVISE_BIG_PCLUSTER_1) === 0) !== ((advise & ADVISE_BIG_PCLUSTER_2) === 0)) {
      throw new FilesystemError(`erofs: inode ${inode.id} has inconsistent big pcluster flags`)
    }
    inode.z = z
    if (z.inlineSize > 0 || (advise & ADVISE_FRAGMENT_PCLUSTER) !== 0) {
      // The tail extent is inline or a fragment: find its head lcluster once.
      const last = await this.#lcluster(inode, z, Math.floor((inode.stat.size - 1) / 2 ** z.lclusterBits), false)
      if (z.inlineSize > 0) z.inlinePosition = last.nextPackOffset
      const head = await this.#head(inode, z, last, (inode.stat.size - 1) % 2 ** z.lclusterBits)
      z.tailHeadLcn = head.lcn
      if ((advise & ADVISE_FRAGMENT_PCLUSTER) !== 0 && inode.layout === LAYOUT_COMPRESSED_FULL) z.fragmentOffset += head.pblk * 2 ** 32
    }
    return z
  }

  async #lcluster (inode: ErofsInode, z: CompressionInfo, lcn: number, lookahead: boolean): Promise<Lcluster> {
    const record = inode.layout === LAYOUT_COMPRESSED_COMPACT
      ? await this.#compactLcluster(inode, z, lcn, lookahead)
      : await this.#fullLcluster(inode, z, lcn)
    if (record.type !== LCLUSTER_NONHEAD && record.clusterofs >= 2 ** z.lclusterBits) {
      throw new FilesystemError(`erofs: inode ${inode.id} lcluster ${lcn} has an out-of-range offset`)
    }
    return record
  }

  async #fullLcluster (inode: ErofsInode, z: CompressionInfo, lcn: number): Promise<Lcluster> {
    const totalLclusters = Math.ceil(inode.stat.size / 2 ** z.lclusterBits)
    if (lcn >= totalLclusters) throw new FilesystemError(`erofs: inode ${inode.id} lcluster ${lcn} is past its end`)
    const pos = Math.ceil(inode.dataPosition / 8) * 8 + 16 + lcn * 8
    const di = await this.#source.read(pos, 8, `erofs lcluster index of inode ${inode.id}`)
    const advise = di.readUInt16LE(0)
    const record = blankLcluster(lcn, advise & 3, pos + 8)
    if (record.type === LCLUSTER_NONHEAD) {
      record.clusterofs = 2 ** z.lclusterBits
      record.delta0 = di.readUInt16LE(4)
      if ((record.delta0 & LI_D0_CBLKCNT) !== 0) {
        if ((z.advise & (ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2)) === 0) throw new FilesystemError(`erofs: inode ${inode.id} has a block count without big pclusters`)
        record.compressedBlocks = record.delta0 & ~LI_D0_CBLKCNT
        record.delta0 = 1
      }
      record.delta1 = di.readUInt16LE(6)
    } else {
      record.partialRef = (advise & LI_PARTIAL_REF) !== 0
      record.clusterofs = di.readUInt16LE(2)
      record.pblk = di.readUInt32LE(4)
    }
    return record
  }

  async #compactLcluster (inode: ErofsInode, z: CompressionInfo, lcn: number, lookahead: boolean): Promise<Lcluster> {
    const lclusterBits = z.lclusterBits
    const totalIndexes = Math.ceil(inode.stat.size / this.blockSize)
    if (lcn >= totalIndexes || lclusterBits > 14) throw new FilesystemError(`erofs: inode ${inode.id} lcluster ${lcn} is out of range`)
    const ebase = Math.ceil(inode.dataPosition / 8) * 8 + 8
    const initial4b = ((32 - ebase % 32) / 4) & 7
    const count2b = (z.advise & ADVISE_COMPACTED_2B) !== 0 && initial4b < totalIndexes ? Math.floor((totalIndexes - initial4b) / 16) * 16 : 0
    let pos = ebase
    let unitShift = 2
    let index = lcn
    if (index >= initial4b) {
      pos += initial4b * 4
      index -= initial4b
      if (index < count2b) {
        unitShift = 1
      } else {
        pos += count2b * 2
        index -= count2b
      }
    }
    pos += index << unitShift
    const count = unitShift === 2 ? 2 : 16
    if (unitShift === 1 && lclusterBits > 12) throw new FilesystemError(`erofs: inode ${inode.id} has 2-byte indexes with large clusters`)
    const packBytes = count << unitShift
    const packStart = Math.floor(pos / packBytes) * packBytes
    const pack = await this.#source.read(packStart, packBytes, `erofs compact indexes of inode ${inode.id}`)
    const loBits = Math.max(lclusterBits, 12)
    const encodeBits = ((packBytes - 4) * 8) / count
    let i = (pos - packStart) >> unitShift
    const entry = (k: number): { lo: number, type: number } => {
      const bit = encodeBits * k
      const v = pack.readUInt32LE(bit >> 3) >>> (bit & 7)
      return { lo: v & ((1 << loBits) - 1), type: (v >>> loBits) & 3 }
    }
    const record = blankLcluster(lcn, 0, packStart + packBytes)
    let { lo, type } = entry(i)
    record.type = type
    const big = (z.advise & ADVISE_BIG_PCLUSTER_1) !== 0
    if (type === LCLUSTER_NONHEAD) {
      record.clusterofs = 2 ** lclusterBits
      if (lookahead) {
        // Distance to the next head: count non-head entries to the end of the pack.
        let d1 = 0
        let k = i
        let last = lo
        for (; k < count; k++) {
          const e = entry(k)
          last = e.lo
          if (e.type !== LCLUSTER_NONHEAD) break
          d1++
        }
        if (k === count && (last & LI_D0_CBLKCNT) === 0) d1 += last - 1
        record.delta1 = d1
      }
      if ((lo & LI_D0_CBLKCNT) !== 0) {
        if (!big) throw new FilesystemError(`erofs: inode ${inode.id} has a block count without big pclusters`)
        record.compressedBlocks = lo & ~LI_D0_CBLKCNT
        record.delta0 = 1
        return record
      }
      if (i + 1 !== count) {
        record.delta0 = lo
        return record
      }
      // The last entry of a pack stores delta[1]; delta[0] comes from the one before it.
      const prev = entry(i - 1)
      lo = prev.type !== LCLUSTER_NONHEAD ? 0 : (prev.lo & LI_D0_CBLKCNT) !== 0 ? 1 : prev.lo
      record.delta0 = lo + 1
      return record
    }
    record.clusterofs = lo
    // A head's block address: the pack's base address plus the blocks of the pclusters before it.
    let blocks = 0
    if (!big) {
      blocks = 1
      while (i > 0) {
        i--
        const e = entry(i)
        if (e.type === LCLUSTER_NONHEAD) i -= e.lo
        if (i >= 0) blocks++
      }
    } else {
      while (i > 0) {
        i--
        const e = entry(i)
        if (e.type === LCLUSTER_NONHEAD) {
          if ((e.lo & LI_D0_CBLKCNT) !== 0) {
            i--
            blocks += e.lo & ~LI_D0_CBLKCNT
            continue
          }
          if (e.lo <= 1) throw new FilesystemError(`erofs: inode ${inode.id} has a corrupt compact index`)
          i -= e.lo - 2
          continue
        }
        blocks++
      }
    }
    record.pblk = pack.readUInt32LE(packBytes - 4) + blocks
    return record
  }

  /** The head lcluster of the extent that `record` (at offset `endoff` in its lcluster) belongs to. */
  async #head (inode: ErofsInode, z: CompressionInfo, record: Lcluster, endoff: number): Promise<Lcluster> {
    let distance: number
    if (record.type !== LCLUSTER_NONHEAD) {
      if (endoff >= record.clusterofs) return record
      if (record.lcn === 0) throw new FilesystemError(`erofs: inode ${inode.id} has an invalid first lcluster`)
      distance = 1
    } else {
      distance = record.delta0
    }
    let lcn = record.lcn
    while (distance > 0 && lcn >= distance) {
      lcn -= distance
      const r = await this.#lcluster(inode, z, lcn, false)
      if (r.type !== LCLUSTER_NONHEAD) return r
      distance = r.delta0
    }
    throw new FilesystemError(`erofs: inode ${inode.id} has a bogus lookback distance at lcluster ${lcn}`)
  }

  async #mapCompressed (inode: ErofsInode, z: CompressionInfo, la: number): Promise<Extent> {
    const size = inode.stat.size
    if (z.wholeFragment !== undefined) return { la: 0, llen: size, kind: 'fragment', pa: z.wholeFragment, plen: 0, form: 'shifted', partial: false }
    const clusterSize = 2 ** z.lclusterBits
    const initial = await this.#lcluster(inode, z, Math.floor(la / clusterSize), false)
    const head = await this.#head(inode, z, initial, la % clusterSize)
    const headLa = head.lcn * clusterSize + head.clusterofs
    const llen = await this.#extentLength(inode, z, head, headLa)
    const partial = head.partialRef
    if (z.inlineSize > 0 && head.lcn === z.tailHeadLcn) {
      if ((z.inlinePosition % this.blockSize) + z.inlineSize > this.blockSize) throw new FilesystemError(`erofs: inode ${inode.id} has an invalid tail-packing size`)
      return { la: headLa, llen, kind: 'inline', pa: z.inlinePosition, plen: z.inlineSize, form: this.#form(inode, z, head), partial }
    }
    if ((z.advise & ADVISE_FRAGMENT_PCLUSTER) !== 0 && head.lcn === z.tailHeadLcn) {
      return { la: headLa, llen, kind: 'fragment', pa: z.fragmentOffset, plen: 0, form: 'shifted', partial }
    }
    const plen = (await this.#compressedBlocks(inode, z, head)) * this.blockSize
    return { la: headLa, llen, kind: 'pcluster', pa: head.pblk * this.blockSize, plen, form: this.#form(inode, z, head), partial }
  }

  #form (inode: ErofsInode, z: CompressionInfo, head: Lcluster): StoredForm {
    if (head.type === LCLUSTER_PLAIN) return (z.advise & ADVISE_INTERLACED_PCLUSTER) !== 0 ? 'interlaced' : 'shifted'
    const algorithm = z.algorithms[head.type === LCLUSTER_HEAD2 ? 1 : 0]
    const codec = ALGORITHMS[algorithm]
    if (codec === undefined) throw new FilesystemError(`erofs: inode ${inode.id} uses unknown compression algorithm ${algorithm}`)
    if ((this.superblock.availableComprAlgs & (1 << algorithm)) === 0) throw new FilesystemError(`erofs: inode ${inode.id} uses ${ALGORITHM_NAMES[algorithm]}, which the superblock does not list`)
    return codec
  }

  async #compressedBlocks (inode: ErofsInode, z: CompressionInfo, head: Lcluster): Promise<number> {
    const big1 = (z.advise & ADVISE_BIG_PCLUSTER_1) !== 0
    const big2 = (z.advise & ADVISE_BIG_PCLUSTER_2) !== 0
    const next = head.lcn + 1
    if ((head.type === LCLUSTER_HEAD1 && !big1) || ((head.type === LCLUSTER_PLAIN || head.type === LCLUSTER_HEAD2) && !big2) ||
        next * 2 ** z.lclusterBits >= inode.stat.size) return 1
    const r = await this.#lcluster(inode, z, next, false)
    if (r.type !== LCLUSTER_NONHEAD) return 1
    if (r.delta0 !== 1 || r.compressedBlocks === 0) throw new FilesystemError(`erofs: inode ${inode.id} has no block count after lcluster ${head.lcn}`)
    if (r.compressedBlocks * this.blockSize > PCLUSTER_MAX_SIZE) throw new FilesystemError(`erofs: inode ${inode.id} has an oversized pcluster`)
    return r.compressedBlocks
  }

  /** Logical length of the extent that starts at `headLa`: up to the next head lcluster or the end of file. */
  async #extentLength (inode: ErofsInode, z: CompressionInfo, head: Lcluster, headLa: number): Promise<number> {
    const clusterSize = 2 ** z.lclusterBits
    let lcn = head.lcn
    for (;;) {
      if (lcn * clusterSize >= inode.stat.size) return inode.stat.size - headLa
      // No extent decodes to more than PCLUSTER_MAX_DSIZE: a longer walk is a corrupt index, not a big file.
      if ((lcn - head.lcn - 1) * clusterSize > PCLUSTER_MAX_DSIZE) throw new FilesystemError(`erofs: inode ${inode.id} has an extent longer than ${PCLUSTER_MAX_DSIZE} bytes`)
      const r = await this.#lcluster(inode, z, lcn, true)
      let step: number
      if (r.type === LCLUSTER_NONHEAD) {
        step = r.delta1 === 0 ? 1 : r.delta1
      } else {
        if (lcn !== head.lcn) {
          const llen = lcn * clusterSize + r.clusterofs - headLa
          if (llen <= 0) throw new FilesystemError(`erofs: inode ${inode.id} has an empty extent`)
          return llen
        }
        step = 1
      }
      lcn += step
    }
  }

  async #readCompressed (inode: ErofsInode, offset: number, length: number): Promise<Buffer> {
    const z = await this.#compression(inode)
    const out = Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const at = offset + done
      const extent = await this.#mapCompressed(inode, z, at)
      if (at < extent.la || extent.llen <= 0) throw new FilesystemError(`erofs: inode ${inode.id} maps offset ${at} to nothing`)
      const skip = at - extent.la
      const n = Math.min(length - done, extent.llen - skip)
      if (n <= 0) throw new FilesystemError(`erofs: inode ${inode.id} has an extent map that does not advance`)
      if (extent.kind === 'fragment') {
        const packed = this.#packed
        if (packed === undefined || packed.id === inode.id) throw new FilesystemError(`erofs: inode ${inode.id} refers to a missing packed inode`)
        if (extent.pa + skip + n > packed.stat.size) throw new FilesystemError(`erofs: inode ${inode.id} has a fragment beyond the packed inode`)
        ;(await this.read(packed, extent.pa + skip, n)).copy(out, done)
      } else {
        const decoded = await this.#decode(inode, extent, skip + n)
        decoded.copy(out, done, skip, skip + n)
      }
      done += n
    }
    return out
  }

  /** The first `needed` bytes of an extent's decompressed data. */
  async #decode (inode: ErofsInode, extent: Extent, needed: number): Promise<Buffer> {
    const ioff = extent.form === 'interlaced' ? extent.la % this.blockSize : 0
    const key = `${extent.pa}:${extent.form}:${ioff}`
    const cached = this.#decoded.get(key, needed)
    if (cached !== undefined) return cached
    if (extent.plen <= 0 || extent.plen > PCLUSTER_MAX_SIZE) throw new FilesystemError(`erofs: inode ${inode.id} has a pcluster of ${extent.plen} bytes`)
    const llen = extent.llen
    if (llen > PCLUSTER_MAX_DSIZE) throw new FilesystemError(`erofs: inode ${inode.id} has an extent of ${llen} bytes`)
    const raw = await this.#source.read(extent.pa, extent.plen, `erofs pcluster of inode ${inode.id}`)
    let data: Buffer
    if (extent.form === 'shifted' || extent.form === 'interlaced') {
      if (llen > extent.plen) throw new FilesystemError(`erofs: inode ${inode.id} has an uncompressed extent longer than its pcluster`)
      if (extent.form === 'shifted') {
        data = raw.subarray(0, llen)
      } else {
        if (extent.plen > this.blockSize) throw new FilesystemError(`erofs: inode ${inode.id} has an interlaced pcluster larger than a block`)
        data = Buffer.concat([raw.subarray(ioff), raw.subarray(0, ioff)]).subarray(0, llen)
      }
    } else {
      let start = 0
      while (start < raw.length && raw[start] === 0) start++
      if (start >= raw.length) throw new FilesystemError(`erofs: inode ${inode.id} has an all-zero pcluster`)
      try {
        data = decompressBlock(extent.form, raw.subarray(start), llen, true)
      } catch (err) {
        if (err instanceof CompressionError) throw new FilesystemError(`erofs: inode ${inode.id}: ${err.message}`)
        throw err
      }
      if (data.length < Math.min(llen, needed)) throw new FilesystemError(`erofs: inode ${inode.id} pcluster decoded to ${data.length} of ${llen} bytes`)
    }
    this.#decoded.set(key, data)
    return data
  }

  async close (): Promise<void> {
    this.#decoded.clear()
    await this.#source.close()
  }
}
