import { CompressionError } from '../errors.ts'

/**
 * Decodes one LZ4 block (no frame) of at most `outSize` bytes and returns what
 * it produced. With `partial`, decoding stops once `outSize` bytes exist (EROFS
 * reads a prefix of a pcluster that way); otherwise more output is an error.
 */
export function decodeLz4Block (input: Uint8Array, outSize: number, partial: boolean): Buffer {
  const out = Buffer.allocUnsafe(outSize)
  let ip = 0
  let op = 0
  const end = input.length
  while (ip < end) {
    const token = input[ip++]!
    let literals = token >>> 4
    if (literals === 15) [literals, ip] = extendedLength(input, ip, literals, 'literal')
    if (ip + literals > end) throw new CompressionError('lz4: literals run past the input')
    if (op + literals > outSize) {
      if (!partial) throw new CompressionError('lz4: output exceeds the expected size')
      out.set(input.subarray(ip, ip + outSize - op), op)
      return out
    }
    out.set(input.subarray(ip, ip + literals), op)
    ip += literals
    op += literals
    if (ip === end) break // the last sequence has literals only
    if (op === outSize && partial) return out
    if (ip + 2 > end) throw new CompressionError('lz4: truncated match offset')
    const offset = input[ip]! | (input[ip + 1]! << 8)
    ip += 2
    if (offset === 0 || offset > op) throw new CompressionError('lz4: match offset outside the output')
    let length = (token & 15) + 4
    if ((token & 15) === 15) [length, ip] = extendedLength(input, ip, length, 'match')
    if (op + length > outSize) {
      if (!partial) throw new CompressionError('lz4: output exceeds the expected size')
      length = outSize - op
    }
    let src = op - offset
    if (offset >= length) {
      out.copyWithin(op, src, src + length)
      op += length
    } else {
      for (let i = 0; i < length; i++) out[op++] = out[src++]!
    }
    if (op === outSize && partial) return out
  }
  return out.subarray(0, op)
}

/** A length continued in bytes of 255 until a smaller one; returns it and the position after it. */
function extendedLength (input: Uint8Array, at: number, initial: number, what: string): [number, number] {
  let length = initial
  let ip = at
  let b: number
  do {
    if (ip >= input.length) throw new CompressionError(`lz4: truncated ${what} length`)
    b = input[ip++]!
    length += b
  } while (b === 255)
  return [length, ip]
}
