import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CompressionError, decodeXz, decompressBlock } from '../../../services/compression/index.ts'
import { crc64 } from '../../../services/compression/xz.ts'
import { decodeLz4Block } from '../../../services/compression/lz4.ts'
import { GOLDEN_DIR } from '../../fixtures/iso-report.ts'
import { fakeBytes } from '../../fixtures/rootfs-tree.ts'
import { missingTools, run } from '../../fixtures/tools.ts'
import { execFileSync } from 'node:child_process'

const xzTool = (args: string[], input: Buffer): Buffer => execFileSync('xz', args, { input, maxBuffer: 1 << 28 })

t.test('xz: every golden fixture decodes, its integrity check verified in-process', async t => {
  for (const sub of ['iso', 'initrd']) {
    for (const name of readdirSync(join(GOLDEN_DIR, sub)).filter(n => n.endsWith('.xz'))) {
      const input = readFileSync(join(GOLDEN_DIR, sub, name))
      const { data, length } = decodeXz(input, 64 << 20)
      t.equal(length, input.length, `${name}: the whole stream`)
      t.ok(data.length > input.length, `${name}: ${data.length} bytes`)
    }
  }
})

t.test('xz: check types, multi-block streams and presets against xz-utils', { skip: missingTools('xz') }, async t => {
  const text = Buffer.concat([readFileSync(new URL('../../../services/compression/lzma.ts', import.meta.url)), fakeBytes(1, 300_000)])
  const random = fakeBytes(2, 200_000, false)
  for (const check of ['none', 'crc32', 'crc64', 'sha256']) {
    for (const [label, data] of [['text', text], ['random', random], ['empty', Buffer.alloc(0)]] as const) {
      const stream = xzTool(['-z', '-c', `--check=${check}`, '-6'], data)
      t.ok(decodeXz(stream, 1 << 24).data.equals(data), `${check} ${label}`)
    }
  }
  const blocks = xzTool(['-z', '-c', '--block-size=65536', '-T1', '-9e'], text)
  t.ok(decodeXz(blocks, 1 << 24).data.equals(text), 'several blocks with sizes in their headers')
  const tail = Buffer.concat([xzTool(['-z', '-c'], text), Buffer.from('trailing')])
  t.equal(decodeXz(tail, 1 << 24).length, tail.length - 8, 'stops at the end of the first stream')
  t.equal(Buffer.from(crc64(Buffer.from('123456789'))).toString('hex'), 'fa3919dfbbc95d99', 'CRC-64/XZ check value 0x995DC9BBDF1939FA, little-endian')

  const bcj = xzTool(['-z', '-c', '--x86', '--lzma2'], text)
  t.throws(() => decodeXz(bcj, 1 << 24), /unsupported filter x86 BCJ/)
  const lzmaAlone = xzTool(['-z', '-c', '--format=lzma'], text)
  t.throws(() => decodeXz(lzmaAlone, 1 << 24), /no stream header magic/)
  t.throws(() => decodeXz(xzTool(['-z', '-c'], text), 1000), /output exceeds 1000 bytes/)
})

t.test('xz: corruption anywhere is a CompressionError, never a wrong answer', { skip: missingTools('xz') }, async t => {
  const data = fakeBytes(3, 50_000)
  const stream = xzTool(['-z', '-c', '--check=crc32'], data)
  let rejected = 0
  for (let i = 0; i < stream.length; i += Math.max(1, Math.floor(stream.length / 300))) {
    const bad = Buffer.from(stream)
    bad[i] ^= 0x10
    try {
      const out = decodeXz(bad, 1 << 20).data
      t.fail(`a flip at byte ${i} decoded to ${out.length} bytes`)
    } catch (err) {
      if (!(err instanceof CompressionError)) t.fail(`byte ${i}: ${(err as Error).stack}`)
      rejected++
    }
  }
  for (const cut of [1, 12, 30, stream.length >> 1, stream.length - 1]) {
    t.throws(() => decodeXz(stream.subarray(0, cut), 1 << 20), CompressionError, `truncated to ${cut}`)
  }
  t.ok(rejected > 250, `${rejected} flips rejected`)
})

t.test('lz4 blocks: literals, overlapping matches, prefixes and refusals', async t => {
  // "abcabcabcabcX": 3 literals, a match of 9 at distance 3, then 1 literal.
  const block = Buffer.from([0x35, 0x61, 0x62, 0x63, 0x03, 0x00, 0x10, 0x58])
  t.equal(decodeLz4Block(block, 100, false).toString(), 'abcabcabcabcX')
  t.equal(decodeLz4Block(block, 7, true).toString(), 'abcabca', 'a prefix stops mid-match')
  t.throws(() => decodeLz4Block(block, 7, false), /exceeds the expected size/)
  t.throws(() => decodeLz4Block(Buffer.from([0x10, 0x61, 0x05, 0x00]), 100, false), /match offset outside the output/)
  t.throws(() => decodeLz4Block(Buffer.from([0xf0]), 100, false), /truncated literal length/)
  t.throws(() => decodeLz4Block(Buffer.from([0x50, 0x61]), 100, false), /literals run past the input/)
})

t.test('zlib, raw deflate and zstd through one entry point, bounded', { skip: missingTools('zstd') }, async t => {
  const { deflateSync, deflateRawSync } = await import('node:zlib')
  const data = fakeBytes(4, 100_000)
  t.ok(decompressBlock('zlib', deflateSync(data), 1 << 20).equals(data))
  t.ok(decompressBlock('deflate', deflateRawSync(data), 1 << 20).equals(data))
  const zstd = Buffer.from(run('zstd', ['-c', '-q'], { input: data }), 'latin1')
  t.ok(decompressBlock('zstd', zstd, 1 << 20).equals(data))
  t.ok(decompressBlock('zstd', zstd, 1000, true).equals(data.subarray(0, 1000)), 'a prefix')
  t.throws(() => decompressBlock('zlib', deflateSync(data), 1000), /zlib: output exceeds 1000 bytes/)
  t.throws(() => decompressBlock('zstd', Buffer.from('not zstd at all'), 1000), CompressionError)
})
