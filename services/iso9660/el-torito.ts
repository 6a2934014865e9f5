import { ByteReader, SECTOR } from './bytes.ts'
import { IsoFormatError } from '../errors.ts'

export const PLATFORM = { x86: 0, ppc: 1, mac: 2, efi: 0xef } as const

export interface BootEntry {
  /** Platform of the section the entry is in (the default entry uses the validation entry's). */
  platform: number
  bootable: boolean
  /** 0 = no emulation. */
  mediaType: number
  loadSegment: number
  systemType: number
  /** Sectors of 512 bytes to load (El Torito's "sector count"). */
  loadSectors: number
  lba: number
}

export interface BootCatalog {
  lba: number
  validationPlatform: number
  idString: string
  entries: BootEntry[]
}

const MAX_CATALOG_ENTRIES = 63

export function parseBootRecord (descriptor: Buffer): number | undefined {
  const r = new ByteReader(descriptor, 'boot record')
  if (r.ascii(7, 23) !== 'EL TORITO SPECIFICATION') return undefined
  return r.u32le(71)
}

export function parseBootCatalog (sector: Buffer, lba: number): BootCatalog {
  const r = new ByteReader(sector, 'El Torito catalog')
  if (r.u8(0) !== 1 || r.u8(30) !== 0x55 || r.u8(31) !== 0xaa) {
    throw new IsoFormatError('El Torito catalog: no validation entry')
  }
  let sum = 0
  for (let i = 0; i < 32; i += 2) sum = (sum + r.u16le(i)) & 0xffff
  if (sum !== 0) throw new IsoFormatError('El Torito catalog: validation entry checksum mismatch')
  const validationPlatform = r.u8(1)
  const entries: BootEntry[] = [readEntry(r, 32, validationPlatform)]
  let offset = 64
  let platform = validationPlatform
  let remaining = 0
  let finalSection = false
  while (offset + 32 <= sector.length && entries.length < MAX_CATALOG_ENTRIES) {
    const indicator = r.u8(offset)
    if (remaining === 0) {
      // A section header (0x90, or 0x91 for the last one) announces its entries.
      if (finalSection || (indicator !== 0x90 && indicator !== 0x91)) break
      finalSection = indicator === 0x91
      platform = r.u8(offset + 1)
      remaining = r.u16le(offset + 2)
      offset += 32
      continue
    }
    if (indicator !== 0x88 && indicator !== 0x00) break
    entries.push(readEntry(r, offset, platform))
    remaining--
    offset += 32
  }
  return { lba, validationPlatform, idString: r.text(4, 24), entries }
}

function readEntry (r: ByteReader, at: number, platform: number): BootEntry {
  return {
    platform,
    bootable: r.u8(at) === 0x88,
    mediaType: r.u8(at + 1) & 0x0f,
    loadSegment: r.u16le(at + 2),
    systemType: r.u8(at + 4),
    loadSectors: r.u16le(at + 6),
    lba: r.u32le(at + 8)
  }
}

/** Builds a one-sector catalog: validation + default entry, then one section per further entry. */
export function buildBootCatalog (entries: readonly BootEntry[], idString = ''): Buffer {
  if (entries.length === 0) throw new IsoFormatError('El Torito catalog: no boot entry')
  if ((entries.length * 2) * 32 > SECTOR) throw new IsoFormatError('El Torito catalog: too many entries')
  const catalog = Buffer.alloc(SECTOR)
  const first = entries[0]!
  catalog[0] = 1
  catalog[1] = first.platform
  catalog.write(idString.slice(0, 24), 4, 'latin1')
  catalog[30] = 0x55
  catalog[31] = 0xaa
  let sum = 0
  for (let i = 0; i < 32; i += 2) sum = (sum + catalog.readUInt16LE(i)) & 0xffff
  catalog.writeUInt16LE((0x10000 - sum) & 0xffff, 28)
  writeEntry(catalog, 32, first)
  let offset = 64
  for (let i = 1; i < entries.length; i++) {
    const entry = entries[i]!
    catalog[offset] = i === entries.length - 1 ? 0x91 : 0x90
    catalog[offset + 1] = entry.platform
    catalog.writeUInt16LE(1, offset + 2)
    writeEntry(catalog, offset + 32, entry)
    offset += 64
  }
  return catalog
}

function writeEntry (catalog: Buffer, at: number, entry: BootEntry): void {
  catalog[at] = entry.bootable ? 0x88 : 0
  catalog[at + 1] = entry.mediaType
  catalog.writeUInt16LE(entry.loadSegment, at + 2)
  catalog[at + 4] = entry.systemType
  catalog.writeUInt16LE(entry.loadSectors, at + 6)
  catalog.writeUInt32LE(entry.lba, at + 8)
}
