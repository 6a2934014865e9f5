import { constants, inflateRawSync, inflateSync, zstdDecompressSync } from 'node:zlib'
import { CompressionError } from '../errors.ts'
import { decodeLz4Block } from './lz4.ts'
import { decodeMicroLzma } from './lzma.ts'
import { decodeXz } from './xz.ts'

export { CompressionError } from '../errors.ts'
export { decodeXz } from './xz.ts'

/*
 * LZMA is decoded here rather than by a native package: EROFS stores MicroLZMA
 * (a headerless LZMA1 stream whose first byte is the inverted properties), which
 * no well-kept npm package exposes; an in-process decoder needs no prebuilt
 * binary per architecture (x86_64, aarch64, s390x, ppc64le), bounds its output
 * by construction, and fails with our own errors on corrupt input. Its speed
 * (bench: nmstatectl from 1 GiB EROFS-lzma in ~0.4 s) is well within the need.
 */

/**
 * The block codecs filesystem images use. `zlib` is squashfs "gzip" (a zlib
 * stream), `deflate` is EROFS's raw DEFLATE, `microlzma` is EROFS's LZMA.
 */
export type Codec = 'zlib' | 'deflate' | 'zstd' | 'xz' | 'lz4' | 'microlzma'

/**
 * Decodes one compressed block. The output may not exceed `limit` bytes; with
 * `prefix` decoding stops there instead (a read of the first bytes only).
 * MicroLZMA has no end marker: it always yields exactly `limit` bytes.
 */
export function decompressBlock (codec: Codec, input: Uint8Array, limit: number, prefix = false): Buffer {
  switch (codec) {
    case 'lz4': return decodeLz4Block(input, limit, prefix)
    case 'microlzma': return decodeMicroLzma(input, limit)
    case 'xz': return decodeXz(input, limit).data
    case 'zlib': case 'deflate': case 'zstd': return zlibFamily(codec, input, limit, prefix)
  }
}

/** Largest block any supported format decodes (EROFS's Z_EROFS_PCLUSTER_MAX_DSIZE). */
const MAX_BLOCK = 12 << 20

function zlibFamily (codec: 'zlib' | 'deflate' | 'zstd', input: Uint8Array, limit: number, prefix: boolean): Buffer {
  const maxOutputLength = prefix ? MAX_BLOCK : limit
  let out: Buffer
  try {
    if (codec === 'zstd') out = zstdDecompressSync(input, { maxOutputLength })
    else if (codec === 'zlib') out = inflateSync(input, { maxOutputLength })
    else out = inflateRawSync(input, { maxOutputLength, finishFlush: constants.Z_SYNC_FLUSH })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ERR_BUFFER_TOO_LARGE') throw new CompressionError(`${codec}: output exceeds ${limit} bytes`)
    throw new CompressionError(`${codec}: ${e.message}`)
  }
  return prefix && out.length > limit ? out.subarray(0, limit) : out
}
