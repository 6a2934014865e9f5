// The on-disk structures of ISO 9660 that both the reader and the writer handle, each modelled once: a type,
// its read and its write (ECMA-119 §9.1 directory records, §8.4 volume descriptors, §9.4 path tables).
import { ByteReader, SECTOR, writeBoth16, writeBoth32 } from './bytes.ts'
import { IsoFormatError } from '../errors.ts'

export const FLAG = { hidden: 0x01, directory: 0x02, associated: 0x04, multiExtent: 0x80 } as const

/** A directory record: where an extent is, what it is, and its System Use area (Rock Ridge). */
export interface DirectoryRecord {
  lba: number
  size: number
  /** 7-byte recording date. */
  recorded: Buffer
  flags: number
  identifier: Buffer
  systemUse: Buffer
}

const RECORD_FIXED = 33
/** Directory records cannot be longer: their length is one byte. */
export const MAX_RECORD_LENGTH = 255

/** Where the System Use area starts: after the identifier and its padding byte when the length is even. */
export function systemUseOffset (identifierLength: number): number {
  return RECORD_FIXED + identifierLength + (identifierLength % 2 === 0 ? 1 : 0)
}

/** The length of a record: fixed part, identifier, padding, System Use, rounded up to even. */
export function directoryRecordLength (identifierLength: number, systemUseLength: number): number {
  const length = systemUseOffset(identifierLength) + systemUseLength
  return length + (length % 2)
}

export function readDirectoryRecord (buf: Buffer, offset: number, what: string): DirectoryRecord {
  const length = new ByteReader(buf, what).u8(offset)
  if (length < 34) throw new IsoFormatError(`${what}: record length ${length} is below 34`)
  new ByteReader(buf, what).check(offset, length)
  const rec = new ByteReader(buf.subarray(offset, offset + length), what)
  const nameLength = rec.u8(32)
  if (RECORD_FIXED + nameLength > length) throw new IsoFormatError(`${what}: identifier overruns the record`)
  const suspStart = systemUseOffset(nameLength)
  return {
    lba: rec.u32le(2),
    size: rec.u32le(10),
    recorded: rec.bytes(18, 7),
    flags: rec.u8(25),
    identifier: rec.bytes(RECORD_FIXED, nameLength),
    systemUse: suspStart < length ? rec.bytes(suspStart, length - suspStart) : Buffer.alloc(0)
  }
}

export function writeDirectoryRecord (record: DirectoryRecord): Buffer {
  const length = directoryRecordLength(record.identifier.length, record.systemUse.length)
  if (length > MAX_RECORD_LENGTH) throw new IsoFormatError(`directory record for ${record.identifier.toString('latin1')} is longer than ${MAX_RECORD_LENGTH} bytes`)
  const out = Buffer.alloc(length)
  out[0] = length
  writeBoth32(out, 2, record.lba)
  writeBoth32(out, 10, record.size)
  record.recorded.copy(out, 18, 0, 7)
  out[25] = record.flags
  writeBoth16(out, 28, 1)
  out[32] = record.identifier.length
  record.identifier.copy(out, RECORD_FIXED)
  record.systemUse.copy(out, systemUseOffset(record.identifier.length))
  return out
}

/** Byte offsets of the fields of a primary or supplementary volume descriptor. */
export const DESCRIPTOR = {
  systemId: [8, 32],
  volumeId: [40, 32],
  volumeSpaceSize: 80,
  escapes: 88,
  setSize: 120,
  sequenceNumber: 124,
  blockSize: 128,
  pathTableSize: 132,
  lPathTable: 140,
  optionalLPathTable: 144,
  mPathTable: 148,
  optionalMPathTable: 152,
  rootRecord: [156, 34],
  volumeSetId: [190, 128],
  publisherId: [318, 128],
  preparerId: [446, 128],
  applicationId: [574, 128],
  copyrightFile: [702, 37],
  abstractFile: [739, 37],
  bibliographicFile: [776, 37],
  created: [813, 17],
  modified: [830, 17],
  expires: [847, 17],
  effective: [864, 17],
  fileStructureVersion: 881
} as const

/** The fields of a volume descriptor that the layout decides (the rest are identity: names and dates). */
export interface DescriptorLayout {
  volumeSectors: number
  pathTableSize: number
  lPathTable: number
  mPathTable: number
  root: DirectoryRecord
}

/** Reads the layout fields of a primary or supplementary volume descriptor. */
export function readDescriptorLayout (raw: Buffer, what: string): DescriptorLayout {
  const r = new ByteReader(raw, what)
  const blockSize = r.u16le(DESCRIPTOR.blockSize)
  if (blockSize !== SECTOR) throw new IsoFormatError(`${what}: logical block size ${blockSize} is not 2048`)
  return {
    volumeSectors: r.u32le(DESCRIPTOR.volumeSpaceSize),
    pathTableSize: r.u32le(DESCRIPTOR.pathTableSize),
    lPathTable: r.u32le(DESCRIPTOR.lPathTable),
    mPathTable: r.u32be(DESCRIPTOR.mPathTable),
    root: readDirectoryRecord(raw.subarray(DESCRIPTOR.rootRecord[0], DESCRIPTOR.rootRecord[0] + DESCRIPTOR.rootRecord[1]), 0, `${what} root directory record`)
  }
}

/** Writes the layout fields into a descriptor whose identity fields are already there. */
export function writeDescriptorLayout (d: Buffer, layout: DescriptorLayout): void {
  writeBoth32(d, DESCRIPTOR.volumeSpaceSize, layout.volumeSectors)
  writeBoth16(d, DESCRIPTOR.setSize, 1)
  writeBoth16(d, DESCRIPTOR.sequenceNumber, 1)
  writeBoth16(d, DESCRIPTOR.blockSize, SECTOR)
  writeBoth32(d, DESCRIPTOR.pathTableSize, layout.pathTableSize)
  d.writeUInt32LE(layout.lPathTable, DESCRIPTOR.lPathTable)
  d.writeUInt32LE(0, DESCRIPTOR.optionalLPathTable)
  d.writeUInt32BE(layout.mPathTable, DESCRIPTOR.mPathTable)
  d.writeUInt32BE(0, DESCRIPTOR.optionalMPathTable)
  writeDirectoryRecord(layout.root).copy(d, DESCRIPTOR.rootRecord[0])
}

/**
 * A path table record (ECMA-119 §9.4): a directory's identifier, its extent and the number of its
 * parent (1-based, in table order; the root is record 1 and its own parent). The table is written
 * twice, little-endian (L) and big-endian (M); the extended attribute length is always 0 here.
 */
export interface PathTableRecord {
  identifier: Buffer
  lba: number
  parent: number
}

const PATH_RECORD_FIXED = 8

/** The bytes a table of records with these identifier lengths takes (each record padded to even). */
export function pathTableSize (identifierLengths: number[]): number {
  return identifierLengths.reduce((n, l) => n + PATH_RECORD_FIXED + l + (l % 2), 0)
}

/** The records of a path table of `buf.length` bytes, up to the first zero-length record. */
export function readPathTable (buf: Buffer, bigEndian: boolean, what: string): PathTableRecord[] {
  const r = new ByteReader(buf, what)
  const records: PathTableRecord[] = []
  for (let at = 0; at + PATH_RECORD_FIXED <= buf.length;) {
    const length = r.u8(at)
    if (length === 0) break
    records.push({
      identifier: r.bytes(at + PATH_RECORD_FIXED, length),
      lba: bigEndian ? r.u32be(at + 2) : r.u32le(at + 2),
      parent: bigEndian ? r.u16be(at + 6) : r.u16le(at + 6)
    })
    at += PATH_RECORD_FIXED + length + (length % 2)
  }
  return records
}

export function writePathTable (records: PathTableRecord[], bigEndian: boolean): Buffer {
  const out = Buffer.alloc(pathTableSize(records.map(rec => rec.identifier.length)))
  let at = 0
  for (const { identifier, lba, parent } of records) {
    out[at] = identifier.length
    if (bigEndian) {
      out.writeUInt32BE(lba, at + 2)
      out.writeUInt16BE(parent, at + 6)
    } else {
      out.writeUInt32LE(lba, at + 2)
      out.writeUInt16LE(parent, at + 6)
    }
    identifier.copy(out, at + PATH_RECORD_FIXED)
    at += PATH_RECORD_FIXED + identifier.length + (identifier.length % 2)
  }
  return out
}
