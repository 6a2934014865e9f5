import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { CompressionError } from '../errors.ts'
import { LzmaDecoder, parseLzmaProperties } from './lzma.ts'

/**
 * The .xz container (tukaani.org/xz/xz-file-format.txt) with the LZMA2 filter:
 * what squashfs `-comp xz` blocks and xz-compressed initrds hold. Branch/call
 * filters (BCJ) and delta are refused by name; none of our inputs use them.
 */

const MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]
const FILTER_LZMA2 = 0x21
const FILTER_NAMES = new Map([[0x03, 'delta'], [0x04, 'x86 BCJ'], [0x05, 'PowerPC BCJ'], [0x06, 'IA-64 BCJ'], [0x07, 'ARM BCJ'], [0x08, 'ARM-Thumb BCJ'], [0x09, 'SPARC BCJ'], [0x0a, 'ARM64 BCJ'], [0x0b, 'RISC-V BCJ']])

export interface XzResult {
  data: Buffer
  /** Bytes of `input` that the stream occupied, stream padding excluded. */
  length: number
}

class Cursor {
  readonly buf: Uint8Array
  pos: number
  readonly end: number
  constructor (buf: Uint8Array, pos: number, end: number) {
    this.buf = buf; this.pos = pos; this.end = end
  }

  byte (): number {
    if (this.pos >= this.end) throw new CompressionError('xz: stream is truncated')
    return this.buf[this.pos++]!
  }

  varint (): number {
    let value = 0
    for (let i = 0; i < 9; i++) {
      const b = this.byte()
      value += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw new CompressionError('xz: non-minimal integer encoding')
        if (value > Number.MAX_SAFE_INTEGER) throw new CompressionError('xz: integer out of range')
        return value
      }
    }
    throw new CompressionError('xz: integer is too long')
  }
}

function u32le (buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0
}

function checkSize (type: number): number {
  return type === 0 ? 0 : 4 << Math.floor((type - 1) / 3)
}

/** Decodes the first xz stream of `input`; its output may not exceed `maxOutput` bytes. */
export function decodeXz (input: Uint8Array, maxOutput: number): XzResult {
  if (input.length < 24 || MAGIC.some((b, i) => input[i] !== b)) throw new CompressionError('xz: no stream header magic')
  const flags = input.subarray(6, 8)
  if (crc32(flags) !== u32le(input, 8)) throw new CompressionError('xz: stream header CRC mismatch')
  if (flags[0] !== 0 || (flags[1]! & 0xf0) !== 0) throw new CompressionError('xz: unsupported stream flags')
  const checkType = flags[1]! & 0x0f
  const sink = new OutputSink(maxOutput)
  const records: Array<[number, number]> = []
  const cur = new Cursor(input, 12, input.length)
  for (;;) {
    const headerStart = cur.pos
    const sizeByte = cur.byte()
    if (sizeByte === 0) break // index indicator
    records.push(decodeBlock(input, headerStart, (sizeByte + 1) * 4, checkType, sink, cur))
  }
  // Index: must list exactly the blocks we decoded.
  const indexStart = cur.pos - 1
  if (cur.varint() !== records.length) throw new CompressionError('xz: index record count mismatch')
  for (const [unpadded, uncompressed] of records) {
    if (cur.varint() !== unpadded || cur.varint() !== uncompressed) throw new CompressionError('xz: index does not match the blocks')
  }
  while ((cur.pos - indexStart) % 4 !== 0) if (cur.byte() !== 0) throw new CompressionError('xz: non-zero index padding')
  if (cur.pos + 4 + 12 > input.length) throw new CompressionError('xz: stream is truncated')
  if (crc32(input.subarray(indexStart, cur.pos)) !== u32le(input, cur.pos)) throw new CompressionError('xz: index CRC mismatch')
  const footer = cur.pos + 4
  if (crc32(input.subarray(footer + 4, footer + 10)) !== u32le(input, footer)) throw new CompressionError('xz: stream footer CRC mismatch')
  if ((u32le(input, footer + 4) + 1) * 4 !== footer - indexStart) throw new CompressionError('xz: backward size mismatch')
  if (input[footer + 8] !== flags[0] || input[footer + 9] !== flags[1] || input[footer + 10] !== 0x59 || input[footer + 11] !== 0x5a) {
    throw new CompressionError('xz: stream footer does not match its header')
  }
  return { data: sink.result(), length: footer + 12 }
}

function decodeBlock (input: Uint8Array, start: number, headerSize: number, checkType: number, sink: OutputSink, cur: Cursor): [number, number] {
  const headerEnd = start + headerSize
  if (headerEnd + 4 > input.length) throw new CompressionError('xz: block header is truncated')
  if (crc32(input.subarray(start, headerEnd - 4)) !== u32le(input, headerEnd - 4)) throw new CompressionError('xz: block header CRC mismatch')
  const h = new Cursor(input, start + 1, headerEnd - 4)
  const flags = h.byte()
  if ((flags & 0x3c) !== 0) throw new CompressionError('xz: unsupported block flags')
  const compressedSize = (flags & 0x40) !== 0 ? h.varint() : -1
  const uncompressedSize = (flags & 0x80) !== 0 ? h.varint() : -1
  const filterCount = (flags & 0x03) + 1
  let dictProps = -1
  for (let i = 0; i < filterCount; i++) {
    const id = h.varint()
    const propsSize = h.varint()
    if (id !== FILTER_LZMA2) {
      const name = FILTER_NAMES.get(id)
      throw new CompressionError(`xz: unsupported filter ${name ?? `0x${id.toString(16)}`}`)
    }
    if (propsSize !== 1 || i !== filterCount - 1) throw new CompressionError('xz: malformed LZMA2 filter flags')
    dictProps = h.byte()
  }
  if (dictProps > 40) throw new CompressionError('xz: invalid LZMA2 dictionary size')
  while (h.pos < h.end) if (h.byte() !== 0) throw new CompressionError('xz: non-zero block header padding')

  const outStart = sink.length
  const dataEnd = decodeLzma2(input, headerEnd, compressedSize >= 0 ? headerEnd + compressedSize : input.length, sink)
  if (compressedSize >= 0 && dataEnd !== headerEnd + compressedSize) throw new CompressionError('xz: compressed size mismatch')
  const produced = sink.length - outStart
  if (uncompressedSize >= 0 && produced !== uncompressedSize) throw new CompressionError('xz: uncompressed size mismatch')
  cur.pos = dataEnd
  while ((cur.pos - headerEnd) % 4 !== 0) if (cur.byte() !== 0) throw new CompressionError('xz: non-zero block padding')
  const size = checkSize(checkType)
  if (cur.pos + size > input.length) throw new CompressionError('xz: block check is truncated')
  verifyCheck(checkType, sink.view(outStart), input.subarray(cur.pos, cur.pos + size))
  cur.pos += size
  return [dataEnd - start + size, produced]
}

/** Decodes LZMA2 chunks from `input[start, end)` until the end marker; returns where it ended. */
function decodeLzma2 (input: Uint8Array, start: number, end: number, sink: OutputSink): number {
  const decoder = new LzmaDecoder(sink.buffer)
  let pos = start
  let needDictReset = true
  let needProps = true
  for (;;) {
    if (pos >= end) throw new CompressionError('lzma2: data is truncated')
    const control = input[pos++]!
    if (control === 0) return pos
    if (pos + 2 > end) throw new CompressionError('lzma2: chunk header is truncated')
    if (control === 1 || control === 2) {
      if (control === 2 && needDictReset) throw new CompressionError('lzma2: missing dictionary reset')
      const size = ((input[pos]! << 8) | input[pos + 1]!) + 1
      pos += 2
      if (pos + size > end) throw new CompressionError('lzma2: uncompressed chunk is truncated')
      sink.reserve(size)
      if (control === 1) { sink.dictStart = sink.length; needDictReset = false }
      sink.buffer.set(input.subarray(pos, pos + size), sink.length)
      sink.length += size
      pos += size
      continue
    }
    if (control < 0x80) throw new CompressionError(`lzma2: invalid control byte 0x${control.toString(16)}`)
    if (pos + 4 > end) throw new CompressionError('lzma2: chunk header is truncated')
    const unpacked = ((control & 0x1f) << 16) + ((input[pos]! << 8) | input[pos + 1]!) + 1
    const packed = ((input[pos + 2]! << 8) | input[pos + 3]!) + 1
    pos += 4
    const reset = (control >>> 5) & 3
    if (reset === 3) { sink.dictStart = sink.length; needDictReset = false } else if (needDictReset) throw new CompressionError('lzma2: missing dictionary reset')
    if (reset >= 2) {
      if (pos >= end) throw new CompressionError('lzma2: chunk header is truncated')
      const props = parseLzmaProperties(input[pos++]!)
      if (props.lc + props.lp > 4) throw new CompressionError('lzma2: lc + lp exceeds 4')
      decoder.setProperties(props)
      needProps = false
    } else if (needProps) {
      throw new CompressionError('lzma2: missing properties')
    }
    if (reset >= 1) decoder.resetState()
    if (pos + packed > end) throw new CompressionError('lzma2: compressed chunk is truncated')
    sink.reserve(unpacked)
    decoder.out = sink.buffer
    decoder.pos = sink.length
    decoder.dictStart = sink.dictStart
    decoder.startRangeCoder(input, pos, pos + packed, true)
    const limit = sink.length + unpacked
    if (decoder.decode(limit) || decoder.pos !== limit) throw new CompressionError('lzma2: chunk ended early')
    if (decoder.hasPendingMatch) throw new CompressionError('lzma2: match crosses a chunk boundary')
    if (!decoder.finishRangeCoder() || decoder.inputPosition !== pos + packed) throw new CompressionError('lzma2: chunk size mismatch')
    sink.length = limit
    pos += packed
  }
}

/** A growing output buffer with a hard limit. */
class OutputSink {
  buffer: Buffer
  length = 0
  dictStart = 0
  readonly #max: number

  constructor (max: number, initial = 64 << 10) {
    this.#max = max
    this.buffer = Buffer.allocUnsafe(Math.min(max, initial))
  }

  reserve (n: number): void {
    const need = this.length + n
    if (need > this.#max) throw new CompressionError(`xz: output exceeds ${this.#max} bytes`)
    if (need <= this.buffer.length) return
    const next = Buffer.allocUnsafe(Math.min(this.#max, Math.max(need, this.buffer.length * 2)))
    this.buffer.copy(next, 0, 0, this.length)
    this.buffer = next
  }

  view (from: number): Buffer { return this.buffer.subarray(from, this.length) }
  result (): Buffer { return this.buffer.subarray(0, this.length) }
}

function verifyCheck (type: number, data: Uint8Array, stored: Uint8Array): void {
  let ok: boolean
  switch (type) {
    case 0: ok = true; break
    case 1: ok = crc32(data) === u32le(stored, 0); break
    case 4: ok = Buffer.from(crc64(data)).equals(stored); break
    case 10: ok = createHash('sha256').update(data).digest().equals(stored); break
    default: throw new CompressionError(`xz: unsupported check type ${type}`)
  }
  if (!ok) throw new CompressionError('xz: integrity check failed')
}

let crc64Table: Uint32Array | undefined

/** CRC-64/XZ (ECMA-182, reflected), as little-endian bytes. */
export function crc64 (data: Uint8Array): Uint8Array {
  if (crc64Table === undefined) {
    crc64Table = new Uint32Array(512)
    for (let n = 0; n < 256; n++) {
      let lo = n
      let hi = 0
      for (let k = 0; k < 8; k++) {
        const lsb = lo & 1
        lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0
        hi >>>= 1
        if (lsb !== 0) { lo = (lo ^ 0xD7870F42) >>> 0; hi = (hi ^ 0xC96C5795) >>> 0 }
      }
      crc64Table[2 * n] = lo; crc64Table[2 * n + 1] = hi
    }
  }
  const table = crc64Table
  let lo = 0xFFFFFFFF
  let hi = 0xFFFFFFFF
  for (let i = 0; i < data.length; i++) {
    const idx = ((lo ^ data[i]!) & 0xff) * 2
    lo = (((lo >>> 8) | (hi << 24)) ^ table[idx]!) >>> 0
    hi = ((hi >>> 8) ^ table[idx + 1]!) >>> 0
  }
  lo = ~lo >>> 0; hi = ~hi >>> 0
  const out = new Uint8Array(8)
  const view = new DataView(out.buffer)
  view.setUint32(0, lo, true); view.setUint32(4, hi, true)
  return out
}
