import type { ByteSource } from './byte-source.ts'
import { crc32c } from './crc32c.ts'
import { FilesystemError } from '../errors.ts'
import { EROFS_MAGIC } from './magic.ts'

/**
 * The EROFS superblock (erofs-utils' include/erofs_fs.h, struct
 * erofs_super_block; names camelCased): the fields this reader uses, all in
 * the fixed 128 bytes, parsed and validated once.
 */
export interface ErofsSuperblock {
  readonly magic: number
  readonly checksum: number
  readonly featureCompat: number
  readonly blkszbits: number
  /** The superblock is 128 + 16 * sbExtslots bytes. */
  readonly sbExtslots: number
  readonly rootNid: number
  readonly metaBlkaddr: number
  readonly featureIncompat: number
  /** The u1 union as the algorithm bitmap; without compr_cfgs it holds lz4_max_distance and only lz4 exists. */
  readonly availableComprAlgs: number
  readonly packedNid: number
}

const EROFS_SUPER_OFFSET = EROFS_MAGIC.offset
const EROFS_SUPER_SIZE = 128

const COMPAT_SB_CHKSUM = 0x01
const INCOMPAT_COMPR_CFGS = 0x02

const INCOMPAT = new Map<number, string>([
  [0x01, 'lz4_0padding'], [0x02, 'compr_cfgs/big_pcluster'], [0x04, 'chunked_file'], [0x08, 'device_table'],
  [0x10, 'ztailpacking'], [0x20, 'fragments/dedupe'], [0x40, 'xattr_prefixes'], [0x80, '48bit'], [0x100, 'metabox']
])
/** Bits whose meaning this reader implements (xattr prefixes only matter to xattr readers). */
const INCOMPAT_SUPPORTED = 0x01 | 0x02 | 0x04 | 0x10 | 0x20 | 0x40

function invalid (field: string, problem: string): Error {
  return new FilesystemError(`erofs: superblock ${field}: ${problem}`)
}

/** The fixed 128 bytes of a superblock (from its magic on), or a FilesystemError naming the field that is wrong. */
export function parseErofsSuperblock (bytes: Buffer): ErofsSuperblock {
  if (bytes.length < EROFS_SUPER_SIZE) throw new FilesystemError(`erofs: superblock of ${bytes.length} bytes, not ${EROFS_SUPER_SIZE}`)
  const magic = bytes.readUInt32LE(0)
  if (magic !== EROFS_MAGIC.value) throw new FilesystemError('not an EROFS image (bad superblock magic)')
  const blkszbits = bytes[12]!
  if (blkszbits < 9 || blkszbits > 16) throw invalid('blkszbits', `unsupported block size 2^${blkszbits}`)
  const featureIncompat = bytes.readUInt32LE(80)
  const unknown = featureIncompat & ~INCOMPAT_SUPPORTED
  if (unknown !== 0) {
    const names = []
    for (let bit = 1; bit !== 0 && bit <= unknown; bit <<= 1) {
      if ((unknown & bit) !== 0) names.push(INCOMPAT.get(bit) ?? `0x${bit.toString(16)}`)
    }
    throw invalid('feature_incompat', `unsupported incompatible feature ${names.join(', ')}`)
  }
  const sbExtslots = bytes[13]!
  const size = EROFS_SUPER_SIZE + sbExtslots * 16
  if (EROFS_SUPER_OFFSET + size > Math.max(1 << blkszbits, EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) || size > 1024) {
    throw invalid('sb_extslots', `a ${size}-byte superblock does not fit its block`)
  }
  const packedNid = bytes.readBigUInt64LE(96)
  if (packedNid > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid('packed_nid', `${packedNid} is out of range`)
  return {
    magic,
    checksum: bytes.readUInt32LE(4),
    featureCompat: bytes.readUInt32LE(8),
    blkszbits,
    sbExtslots,
    rootNid: bytes.readUInt16LE(14),
    metaBlkaddr: bytes.readUInt32LE(40),
    featureIncompat,
    availableComprAlgs: (featureIncompat & INCOMPAT_COMPR_CFGS) !== 0 ? bytes.readUInt16LE(84) : 1,
    packedNid: Number(packedNid)
  }
}

/** The superblock of the image in `source`, parsed, and its checksum verified when it has one. */
export async function readErofsSuperblock (source: ByteSource): Promise<ErofsSuperblock> {
  const sb = parseErofsSuperblock(await source.read(EROFS_SUPER_OFFSET, EROFS_SUPER_SIZE, 'erofs superblock'))
  if ((sb.featureCompat & COMPAT_SB_CHKSUM) !== 0) {
    const blockSize = 1 << sb.blkszbits
    // The checksum covers the rest of the superblock's block, or one block when the superblock is not in block 0.
    const length = blockSize > EROFS_SUPER_OFFSET ? blockSize - EROFS_SUPER_OFFSET : blockSize
    const block = Buffer.from(await source.read(EROFS_SUPER_OFFSET, length, 'erofs superblock'))
    block.writeUInt32LE(0, 4)
    if (crc32c(0xFFFFFFFF, block) !== sb.checksum) throw invalid('checksum', 'mismatch')
  }
  return sb
}
