import { inflateRawSync, zstdDecompressSync } from 'node:zlib'
import { CpioFormatError } from '../errors.ts'
import { MODE, NEWC_MAGIC, TRAILER, checkName, type CpioMember } from './newc.ts'
import { CompressionError, decodeXz } from '../compression/index.ts'

const GZIP = Buffer.from([0x1f, 0x8b])
const XZ = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
const MAX_MEMBERS = 100_000
const MAX_DEPTH = 4
/** Largest decompressed member read (initrds are tens of MiB). */
const MAX_DECOMPRESSED = 1 << 30

export interface CpioEntry extends CpioMember {
  ino: number
  nlink: number
}

/**
 * Reads an initrd the way the kernel unpacks it: a sequence of newc archives,
 * each plain or gzip/xz/zstd-compressed, separated by NUL padding. Returns every
 * entry in order (including directories); names that escape the root are rejected.
 */
export function readInitrd (data: Buffer, depth = 0): CpioEntry[] {
  if (depth > MAX_DEPTH) throw new CpioFormatError('initrd: compressed archives nested too deeply')
  const entries: CpioEntry[] = []
  let offset = 0
  while (offset < data.length) {
    if (data[offset] === 0) { offset++; continue }
    const rest = data.subarray(offset)
    if (startsWith(rest, GZIP)) {
      const { data: inflated, length } = gunzipMember(rest)
      entries.push(...readInitrd(inflated, depth + 1))
      offset += length
    } else if (startsWith(rest, ZSTD)) {
      let decoded: { buffer: Buffer, engine: { bytesWritten: number } }
      try {
        decoded = zstdDecompressSync(rest, { info: true }) as unknown as typeof decoded
      } catch (err) {
        throw new CpioFormatError(`initrd: corrupt zstd frame (${(err as Error).message})`)
      }
      entries.push(...readInitrd(decoded.buffer, depth + 1))
      offset += decoded.engine.bytesWritten
    } else if (startsWith(rest, XZ)) {
      let decoded: { data: Buffer, length: number }
      try {
        decoded = decodeXz(rest, MAX_DECOMPRESSED)
      } catch (err) {
        if (err instanceof CompressionError) throw new CpioFormatError(`initrd: corrupt xz stream (${err.message})`)
        throw err
      }
      entries.push(...readInitrd(decoded.data, depth + 1))
      offset += decoded.length
    } else if (rest.toString('latin1', 0, 6) === NEWC_MAGIC) {
      // The kernel wants plain archives 4-byte aligned; like coreos-installer we read unaligned ones
      // too (the writers here always align what they append).
      offset += readArchive(data, offset, entries)
    } else {
      throw new CpioFormatError(`initrd: invalid magic at offset ${offset}`)
    }
    if (entries.length > MAX_MEMBERS) throw new CpioFormatError('initrd: too many members')
  }
  return entries
}

/** Regular files only, the last copy of a path winning, as the kernel leaves them. */
export function initrdFiles (data: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>()
  for (const e of readInitrd(data)) {
    if ((e.mode & MODE.typeMask) === MODE.file) files.set(e.name, e.data)
  }
  return files
}

/** Parses one uncompressed archive at `start`; returns the bytes it used (through the trailer). */
function readArchive (data: Buffer, start: number, into: CpioEntry[]): number {
  let offset = start
  for (;;) {
    if (offset + 110 > data.length) throw new CpioFormatError(`cpio: header at ${offset} is truncated`)
    const head = data.toString('latin1', offset, offset + 110)
    if (!head.startsWith(NEWC_MAGIC)) throw new CpioFormatError(`cpio: bad magic at ${offset}`)
    const field = (i: number) => {
      const text = head.slice(6 + i * 8, 14 + i * 8)
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new CpioFormatError(`cpio: bad header field at ${offset}`)
      return parseInt(text, 16)
    }
    const nameSize = field(11)
    const fileSize = field(6)
    const nameEnd = offset + 110 + nameSize
    // Padding is relative to the archive's start, which may itself be unaligned.
    const dataStart = nameEnd + ((4 - ((nameEnd - start) % 4)) % 4)
    const dataEnd = dataStart + fileSize
    if (nameSize === 0 || dataEnd > data.length) throw new CpioFormatError(`cpio: member at ${offset} runs past the end`)
    // dracut pads some names with extra NULs: the name ends at the first NUL.
    const rawName = data.toString('utf8', offset + 110, nameEnd)
    const name = rawName.slice(0, rawName.indexOf('\0') === -1 ? undefined : rawName.indexOf('\0')).replace(/^\.\//, '')
    offset = dataEnd + ((4 - ((dataEnd - start) % 4)) % 4)
    if (name === TRAILER) return Math.min(offset, data.length) - start
    if (name === '.' || name === '') continue
    checkName(name)
    into.push({ name, mode: field(1), uid: field(2), gid: field(3), nlink: field(4), mtime: field(5), ino: field(0), data: data.subarray(dataStart, dataEnd) })
  }
}

/**
 * Decodes one gzip member and tells how many bytes it used. (gunzip would try
 * to read whatever follows as another member; the kernel does not.)
 */
export function gunzipMember (buf: Buffer): { data: Buffer, length: number } {
  if (buf.length < 18) throw new CpioFormatError('initrd: truncated gzip member')
  const flags = buf[3]!
  let at = 10
  if (flags & 0x04) at += 2 + buf.readUInt16LE(at)
  if (flags & 0x08) at = buf.indexOf(0, at) + 1
  if (flags & 0x10) at = buf.indexOf(0, at) + 1
  if (flags & 0x02) at += 2
  if (at <= 0 || at >= buf.length) throw new CpioFormatError('initrd: malformed gzip header')
  try {
    const { buffer, engine } = inflateRawSync(buf.subarray(at), { info: true }) as unknown as { buffer: Buffer, engine: { bytesWritten: number } }
    return { data: buffer, length: at + engine.bytesWritten + 8 }
  } catch (err) {
    throw new CpioFormatError(`initrd: corrupt gzip member (${(err as Error).message})`)
  }
}

function startsWith (buf: Buffer, magic: Buffer): boolean {
  return buf.length >= magic.length && buf.subarray(0, magic.length).equals(magic)
}
