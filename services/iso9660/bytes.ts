import { IsoFormatError } from '../errors.ts'

export const SECTOR = 2048

/** A bounds-checked little/big-endian reader over one buffer, naming the structure it reads. */
export class ByteReader {
  readonly buf: Buffer
  readonly what: string

  constructor (buf: Buffer, what: string) {
    this.buf = buf
    this.what = what
  }

  check (offset: number, length: number): void {
    if (!Number.isInteger(offset) || offset < 0 || length < 0 || offset + length > this.buf.length) {
      throw new IsoFormatError(`${this.what}: field at ${offset}+${length} is outside its ${this.buf.length} bytes`)
    }
  }

  u8 (offset: number): number { this.check(offset, 1); return this.buf[offset]! }
  u16le (offset: number): number { this.check(offset, 2); return this.buf.readUInt16LE(offset) }
  u16be (offset: number): number { this.check(offset, 2); return this.buf.readUInt16BE(offset) }
  u32le (offset: number): number { this.check(offset, 4); return this.buf.readUInt32LE(offset) }
  u32be (offset: number): number { this.check(offset, 4); return this.buf.readUInt32BE(offset) }
  u64le (offset: number): number {
    this.check(offset, 8)
    const value = this.buf.readBigUInt64LE(offset)
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new IsoFormatError(`${this.what}: 64-bit value at ${offset} is too large`)
    return Number(value)
  }

  bytes (offset: number, length: number): Buffer { this.check(offset, length); return this.buf.subarray(offset, offset + length) }
  ascii (offset: number, length: number): string { return this.bytes(offset, length).toString('latin1') }
  /** A space-padded d-/a-characters field with the padding removed. */
  text (offset: number, length: number): string { return this.ascii(offset, length).replace(/[ \0]+$/, '') }
}

/** Both-endian fields (ISO 9660 7.2.3 / 7.3.3): little-endian copy first, then big-endian. */
export function writeBoth16 (buf: Buffer, offset: number, value: number): void {
  buf.writeUInt16LE(value, offset)
  buf.writeUInt16BE(value, offset + 2)
}

export function writeBoth32 (buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32LE(value, offset)
  buf.writeUInt32BE(value, offset + 4)
}

/** Writes `text` into a fixed field, padded with `pad` (space for identifiers). */
export function writePadded (buf: Buffer, offset: number, length: number, text: string | Buffer, pad = 0x20): void {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'latin1') : text
  buf.fill(pad, offset, offset + length)
  bytes.copy(buf, offset, 0, Math.min(bytes.length, length))
}

export function sectorsFor (bytes: number, sector = SECTOR): number {
  return Math.ceil(bytes / sector)
}
