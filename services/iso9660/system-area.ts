import { ByteReader } from './bytes.ts'
import { IsoFormatError } from '../errors.ts'

/** The first 16 sectors of an ISO: where isohybrid puts an MBR and a GPT. */
export const SYSTEM_AREA_SIZE = 32768
const MBR_PARTITIONS = 446
const GPT_SIGNATURE = 'EFI PART'
const MAX_GPT_ENTRIES = 1024

export interface MbrPartition {
  index: number
  status: number
  type: number
  startLba: number
  sectors: number
}

export interface GptPartition {
  index: number
  typeGuid: Buffer
  uniqueGuid: Buffer
  firstLba: number
  lastLba: number
  attributes: Buffer
  name: string
}

export interface Gpt {
  diskGuid: Buffer
  entriesLba: number
  entryCount: number
  entrySize: number
  firstUsableLba: number
  lastUsableLba: number
  backupLba: number
  partitions: GptPartition[]
}

export interface SystemArea {
  raw: Buffer
  mbr?: { bootCode: Buffer, diskSignature: number, partitions: MbrPartition[] }
  gpt?: Gpt
}

/** Parses the MBR (when it carries the 0x55AA signature) and a GPT at LBA 1 (512-byte sectors). */
export function parseSystemArea (raw: Buffer): SystemArea {
  const r = new ByteReader(raw, 'system area')
  const result: SystemArea = { raw }
  if (raw.length >= 512 && r.u8(510) === 0x55 && r.u8(511) === 0xaa) {
    const partitions: MbrPartition[] = []
    for (let i = 0; i < 4; i++) {
      const at = MBR_PARTITIONS + i * 16
      const type = r.u8(at + 4)
      const sectors = r.u32le(at + 12)
      if (type === 0 && sectors === 0) continue
      partitions.push({ index: i + 1, status: r.u8(at), type, startLba: r.u32le(at + 8), sectors })
    }
    result.mbr = { bootCode: Buffer.from(r.bytes(0, 440)), diskSignature: r.u32le(440), partitions }
  }
  if (raw.length >= 1024 && r.ascii(512, 8) === GPT_SIGNATURE) {
    const h = new ByteReader(r.bytes(512, 512), 'GPT header')
    const entriesLba = h.u64le(72)
    const entryCount = h.u32le(80)
    const entrySize = h.u32le(84)
    if (entrySize < 128 || entrySize > 4096 || entryCount > MAX_GPT_ENTRIES) {
      throw new IsoFormatError(`GPT header: unsupported entry layout (${entryCount} x ${entrySize})`)
    }
    const partitions: GptPartition[] = []
    const entriesStart = entriesLba * 512
    for (let i = 0; i < entryCount; i++) {
      const at = entriesStart + i * entrySize
      if (at + 128 > raw.length) break // entries past the system area are not read
      const e = new ByteReader(r.bytes(at, 128), `GPT entry ${i + 1}`)
      const typeGuid = e.bytes(0, 16)
      if (typeGuid.every(b => b === 0)) continue
      partitions.push({
        index: i + 1,
        typeGuid: Buffer.from(typeGuid),
        uniqueGuid: Buffer.from(e.bytes(16, 16)),
        firstLba: e.u64le(32),
        lastLba: e.u64le(40),
        attributes: Buffer.from(e.bytes(48, 8)),
        name: e.bytes(56, 72).toString('utf16le').replace(/\0.*$/s, '')
      })
    }
    result.gpt = {
      diskGuid: Buffer.from(h.bytes(56, 16)),
      entriesLba,
      entryCount,
      entrySize,
      firstUsableLba: h.u64le(40),
      lastUsableLba: h.u64le(48),
      backupLba: h.u64le(32),
      partitions
    }
  }
  return result
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

export function crc32 (buf: Buffer): number {
  let c = 0xffffffff
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

/** CHS for an LBA with isohybrid's 64-head, 32-sector geometry (cylinder capped at 1023). */
function chs (lba: number): Buffer {
  const perCylinder = 64 * 32
  let c = Math.floor(lba / perCylinder)
  let h = Math.floor(lba / 32) % 64
  let s = (lba % 32) + 1
  if (c > 1023) { c = 1023; h = 63; s = 32 }
  return Buffer.from([h, s | ((c >> 2) & 0xc0), c & 0xff])
}

export interface HybridLayout {
  /** Total bytes of the padded image (a multiple of 512). */
  imageSize: number
  mbrBootCode: Buffer
  diskSignature: number
  mbrPartitions: Array<Omit<MbrPartition, 'index'>>
  gpt?: { diskGuid: Buffer, partitions: GptPartition[], entryCount: number }
}

/** Builds the 32 KiB system area: MBR, plus a primary GPT at LBA 1-33. */
export function buildSystemArea (layout: HybridLayout): Buffer {
  const area = Buffer.alloc(SYSTEM_AREA_SIZE)
  layout.mbrBootCode.copy(area, 0, 0, Math.min(440, layout.mbrBootCode.length))
  area.writeUInt32LE(layout.diskSignature >>> 0, 440)
  layout.mbrPartitions.forEach((p, i) => {
    const at = MBR_PARTITIONS + i * 16
    area[at] = p.status
    chs(p.startLba).copy(area, at + 1)
    area[at + 4] = p.type
    chs(p.startLba + p.sectors - 1).copy(area, at + 5)
    area.writeUInt32LE(p.startLba, at + 8)
    area.writeUInt32LE(p.sectors, at + 12)
  })
  area[510] = 0x55
  area[511] = 0xaa
  if (layout.gpt !== undefined) {
    const { header, entries } = buildGpt(layout, true)
    header.copy(area, 512)
    entries.copy(area, 1024)
  }
  return area
}

/** Bytes of a backup GPT with `entryCount` 128-byte entries: the entry sectors, then the header sector. */
export function gptBackupBytes (entryCount: number): number {
  return (Math.ceil(entryCount * 128 / 512) + 1) * 512
}

/** The backup GPT: entries then header, filling the last sectors of the image (33 for the usual 128 entries). */
export function buildBackupGpt (layout: HybridLayout): Buffer {
  const { header, entries } = buildGpt(layout, false)
  return Buffer.concat([entries, header])
}

function buildGpt (layout: HybridLayout, primary: boolean): { header: Buffer, entries: Buffer } {
  const gpt = layout.gpt!
  const lastLba = layout.imageSize / 512 - 1
  const entrySectors = Math.ceil(gpt.entryCount * 128 / 512)
  const entries = Buffer.alloc(entrySectors * 512)
  gpt.partitions.forEach(p => {
    const at = (p.index - 1) * 128
    p.typeGuid.copy(entries, at)
    p.uniqueGuid.copy(entries, at + 16)
    entries.writeBigUInt64LE(BigInt(p.firstLba), at + 32)
    entries.writeBigUInt64LE(BigInt(p.lastLba), at + 40)
    p.attributes.copy(entries, at + 48)
    Buffer.from(p.name.slice(0, 36), 'utf16le').copy(entries, at + 56)
  })
  const header = Buffer.alloc(512)
  header.write('EFI PART', 0, 'latin1')
  header.writeUInt32LE(0x00010000, 8)
  header.writeUInt32LE(92, 12)
  header.writeBigUInt64LE(BigInt(primary ? 1 : lastLba), 24)
  header.writeBigUInt64LE(BigInt(primary ? lastLba : 1), 32)
  header.writeBigUInt64LE(BigInt(2 + entrySectors), 40)
  header.writeBigUInt64LE(BigInt(lastLba - 1 - entrySectors), 48)
  gpt.diskGuid.copy(header, 56)
  header.writeBigUInt64LE(BigInt(primary ? 2 : lastLba - entrySectors), 72)
  header.writeUInt32LE(gpt.entryCount, 80)
  header.writeUInt32LE(128, 84)
  header.writeUInt32LE(crc32(entries.subarray(0, gpt.entryCount * 128)), 88)
  header.writeUInt32LE(crc32(header.subarray(0, 92)), 16)
  return { header, entries }
}
