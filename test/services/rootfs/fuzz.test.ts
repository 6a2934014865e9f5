import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CompressionError } from '../../../services/compression/index.ts'
import { ByteSource, FilesystemError, findNmstatectl, openFilesystem, readFile, walk } from '../../../services/rootfs/index.ts'
import { crc32c } from '../../../services/rootfs/crc32c.ts'
import { REPO_ROOTFS } from '../../fixtures/rootfs-images.ts'

/** Recomputes the superblock checksum, so a hand-made corruption is what the reader meets. */
function resign (image: Buffer): Buffer {
  const block = Buffer.from(image.subarray(1024, 4096))
  block.writeUInt32LE(0, 4)
  image.writeUInt32LE(crc32c(0xFFFFFFFF, block), 1024 + 4)
  return image
}

/**
 * Corrupted images (bit flips, truncations, zeroed and garbage blocks) must
 * end in a FilesystemError or CompressionError, or read back something: never
 * another exception, a hang or unbounded memory.
 */

function prng (seed: number): () => number {
  let x = seed
  return () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) / 2 ** 32 }
}

async function exercise (path: string): Promise<string> {
  const fs = await openFilesystem(await ByteSource.open(path))
  try {
    let files = 0
    for await (const entry of walk(fs, { maxEntries: 5000, maxDepth: 32 })) {
      if (entry.inode.stat.type === 'file' && entry.inode.stat.size <= 4 << 20) { await readFile(fs, entry.inode, 4 << 20); files++ }
      if (entry.inode.stat.type === 'symlink') await fs.readlink(entry.inode)
    }
    await findNmstatectl(fs, { maxEntries: 5000, maxDepth: 32 })
    return `read ${files} files`
  } finally {
    await fs.close()
  }
}

for (const image of ['tiny-fcos.erofs', 'tiny-rhcos.squashfs']) {
  t.test(`${image}: corrupted copies fail cleanly`, async t => {
    const dir = t.testdir()
    const original = readFileSync(join(REPO_ROOTFS, image))
    const random = prng(image.length * 7919)
    const mutations: Array<[string, (b: Buffer) => Buffer]> = []
    // The metadata of these images sits in their first and last few KiB: aim most flips there.
    for (let i = 0; i < 150; i++) {
      const nearEnd = random() < 0.5
      const span = Math.min(original.length, 24_576)
      const at = nearEnd ? original.length - 1 - Math.floor(random() * span) : Math.floor(random() * span)
      const bit = 1 << Math.floor(random() * 8)
      mutations.push([`flip bit ${bit} at ${at}`, b => { b[at]! ^= bit; return b }])
    }
    for (let i = 0; i < 30; i++) {
      const at = Math.floor(random() * original.length)
      mutations.push([`flip at ${at}`, b => { b[at]! ^= 0xff; return b }])
    }
    for (const cut of [1024, 1100, 4096, 8192, Math.floor(original.length / 2), original.length - 4096, original.length - 1]) {
      mutations.push([`truncated to ${cut}`, b => b.subarray(0, cut)])
    }
    for (let block = 0; block * 4096 < original.length; block += 3) {
      mutations.push([`block ${block} zeroed`, b => { b.fill(0, block * 4096, (block + 1) * 4096); return b }])
      mutations.push([`block ${block} garbage`, b => { for (let i = block * 4096; i < Math.min(b.length, (block + 1) * 4096); i++) b[i] = (i * 131) & 0xff; return b }])
    }
    let clean = 0
    let failed = 0
    for (const [label, mutate] of mutations) {
      const path = join(dir, 'image')
      writeFileSync(path, mutate(Buffer.from(original)))
      try {
        await exercise(path)
        clean++
      } catch (err) {
        if (err instanceof FilesystemError || err instanceof CompressionError) { failed++; continue }
        t.fail(`${label}: ${(err as Error).stack}`)
      }
    }
    t.pass(`${mutations.length} corrupted copies: ${failed} clear errors, ${clean} still readable`)
    // squashfs has no checksums: flipped data bits can read back as other bytes. EROFS checks its superblock block.
    t.ok(failed > mutations.length / 10, 'corrupt metadata is detected')
  })
}

t.test('absurd sizes and loops in hand-made EROFS metadata', async t => {
  const dir = t.testdir()
  const original = readFileSync(join(REPO_ROOTFS, 'tiny-fcos.erofs'))
  const fs = await openFilesystem(await ByteSource.open(join(REPO_ROOTFS, 'tiny-fcos.erofs')))
  const root = await fs.inode(fs.rootId)
  await fs.close()
  const meta = original.readUInt32LE(1024 + 40) * 4096
  const rootPos = meta + fs.rootId * 32

  const hugeDir = Buffer.from(original)
  if ((hugeDir.readUInt16LE(rootPos) & 1) === 1) hugeDir.writeBigUInt64LE(1n << 40n, rootPos + 8)
  else hugeDir.writeUInt32LE(0xFFFFFFF0, rootPos + 8)
  writeFileSync(join(dir, 'huge.erofs'), resign(hugeDir))
  await t.rejects(exercise(join(dir, 'huge.erofs')), /claims \d+ bytes|outside the/, 'a directory claiming gigabytes')

  const badRoot = Buffer.from(original)
  badRoot.writeUInt16LE(0xFFFF, 1024 + 14)
  writeFileSync(join(dir, 'root.erofs'), resign(badRoot))
  await t.rejects(exercise(join(dir, 'root.erofs')), FilesystemError, 'a root nid past the end')

  const unknown = Buffer.from(original)
  unknown.writeUInt32LE(unknown.readUInt32LE(1024 + 80) | 0x400, 1024 + 80)
  writeFileSync(join(dir, 'feature.erofs'), resign(unknown))
  await t.rejects(exercise(join(dir, 'feature.erofs')), /unsupported incompatible feature 0x400/)
  unknown.writeUInt32LE(original.readUInt32LE(1024 + 80) | 0x80, 1024 + 80)
  writeFileSync(join(dir, 'feature.erofs'), resign(unknown))
  await t.rejects(exercise(join(dir, 'feature.erofs')), /unsupported incompatible feature 48bit/)
  t.equal(root.stat.type, 'dir')
})

t.test('a directory that lists itself is walked once, and lookups through it stay bounded', async t => {
  const { lookup } = await import('../../../services/rootfs/index.ts')
  const dirStat = { type: 'dir' as const, mode: 0o755, size: 0, uid: 0, gid: 0, nlink: 2, ino: 1 }
  const looping = {
    format: 'squashfs' as const,
    rootId: 1,
    inode: async (id: number) => id === 1 ? { id, stat: dirStat } : { id, stat: { ...dirStat, type: 'symlink' as const, ino: id } },
    list: async () => [{ name: 'again', type: 'dir' as const, id: 1 }, { name: 'link', type: 'symlink' as const, id: 2 }],
    readlink: async () => '/link',
    read: async () => Buffer.alloc(0),
    close: async () => {}
  }
  const seen = []
  for await (const entry of walk(looping, { maxEntries: 100, maxDepth: 50 })) seen.push(entry.path)
  t.same(seen, ['', 'link'], 'the root once; its self-reference is not entered again')
  t.equal((await lookup(looping, 'again/again/again'))?.id, 1)
  await t.rejects(lookup(looping, 'link', { follow: true }), /too many symlinks/)
})
