let table: Uint32Array | undefined

/** CRC-32C (Castagnoli, reflected) continuing from `crc`, with no final inversion, as EROFS uses it. */
export function crc32c (crc: number, data: Uint8Array): number {
  if (table === undefined) {
    table = new Uint32Array(256)
    for (let n = 0; n < 256; n++) {
      let c = n
      for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? (c >>> 1) ^ 0x82F63B78 : c >>> 1
      table[n] = c >>> 0
    }
  }
  let c = crc >>> 0
  for (let i = 0; i < data.length; i++) c = (table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)) >>> 0
  return c
}
