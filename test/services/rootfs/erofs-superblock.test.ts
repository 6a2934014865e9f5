import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ByteSource, FilesystemError } from '../../../services/rootfs/index.ts'
import { ErofsFilesystem } from '../../../services/rootfs/erofs.ts'
import { parseErofsSuperblock, readErofsSuperblock } from '../../../services/rootfs/erofs-superblock.ts'
import { EROFS_MAGIC, hasMagic, SQUASHFS_MAGIC } from '../../../services/rootfs/magic.ts'
import { REPO_ROOTFS } from '../../fixtures/rootfs-images.ts'

const image = readFileSync(join(REPO_ROOTFS, 'tiny-fcos.erofs'))
const fixed = (): Buffer => Buffer.from(image.subarray(1024, 1024 + 128))

t.test('each filesystem magic is found where its format puts it, and nowhere else', async t => {
  const squashfs = readFileSync(join(REPO_ROOTFS, 'tiny-rhcos.squashfs'))
  t.ok(hasMagic(image, EROFS_MAGIC))
  t.notOk(hasMagic(image, SQUASHFS_MAGIC))
  t.ok(hasMagic(squashfs, SQUASHFS_MAGIC))
  t.notOk(hasMagic(squashfs, EROFS_MAGIC))
  t.notOk(hasMagic(image.subarray(0, 1027), EROFS_MAGIC), 'too short to hold it')
})

t.test('the superblock of an erofs-utils image, parsed once and the one the reader uses', async t => {
  const sb = parseErofsSuperblock(fixed())
  t.equal(sb.magic, EROFS_MAGIC.value)
  t.equal(sb.blkszbits, 12)
  t.equal(sb.metaBlkaddr, image.readUInt32LE(1024 + 40))
  const fs = await ErofsFilesystem.open(await ByteSource.open(join(REPO_ROOTFS, 'tiny-fcos.erofs')))
  try {
    t.same(fs.superblock, sb)
    t.equal(fs.rootId, sb.rootNid)
    t.equal(fs.blockSize, 1 << sb.blkszbits)
  } finally {
    await fs.close()
  }
})

t.test('without compr_cfgs the algorithm bitmap is lz4 alone, whatever u1 holds', async t => {
  const bytes = fixed()
  bytes.writeUInt32LE(bytes.readUInt32LE(80) & ~0x02, 80)
  bytes.writeUInt16LE(0xFFFF, 84)
  t.equal(parseErofsSuperblock(bytes).availableComprAlgs, 1)
})

t.test('a superblock that fails validation names the field', async t => {
  const broken = (write: (b: Buffer) => void): Buffer => { const b = fixed(); write(b); return b }
  const cases: Array<[string, Buffer, RegExp]> = [
    ['magic', broken(b => b.writeUInt32LE(0x12345678, 0)), /not an EROFS image \(bad superblock magic\)/],
    ['blkszbits', broken(b => { b[12] = 8 }), /superblock blkszbits: unsupported block size 2\^8/],
    ['feature_incompat', broken(b => b.writeUInt32LE(b.readUInt32LE(80) | 0x400 | 0x08, 80)), /superblock feature_incompat: unsupported incompatible feature device_table, 0x400/],
    ['sb_extslots', broken(b => { b[13] = 200 }), /superblock sb_extslots: a 3328-byte superblock/],
    ['packed_nid', broken(b => b.writeBigUInt64LE(1n << 60n, 96)), /superblock packed_nid: 1152921504606846976 is out of range/]
  ]
  for (const [field, bytes, message] of cases) t.throws(() => parseErofsSuperblock(bytes), message, field)
  t.throws(() => parseErofsSuperblock(fixed().subarray(0, 100)), /superblock of 100 bytes/)
  for (const [, bytes] of cases) {
    try { parseErofsSuperblock(bytes) } catch (err) { t.ok(err instanceof FilesystemError) }
  }
})

t.test('a checksummed superblock whose block changed fails on its checksum field', async t => {
  t.ok((image.readUInt32LE(1024 + 8) & 1) !== 0, 'mkfs.erofs checksums the superblock by default')
  const dir = t.testdir()
  const changed = Buffer.from(image)
  changed[1024 + 200]! ^= 1
  writeFileSync(join(dir, 'changed.erofs'), changed)
  const source = await ByteSource.open(join(dir, 'changed.erofs'))
  try {
    await t.rejects(readErofsSuperblock(source), /erofs: superblock checksum: mismatch/)
  } finally {
    await source.close()
  }
})
