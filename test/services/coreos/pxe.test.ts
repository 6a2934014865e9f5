import t from 'tap'
import { FilePool } from '../../../services/compose/file-pool.ts'
import { ImageWriter } from '../../../services/compose/image-writer.ts'
import { findBootArtifacts, initrdAddrsize, pxeInitrd, rangeImage } from '../../../services/coreos/pxe.ts'
import { filesArchive } from '../../../services/coreos/ignition-archive.ts'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { initrdFiles } from '../../fixtures/initrd-reader.ts'
import { goldenIsos } from '../../fixtures/iso-report.ts'

t.test('PXE initrd: initrd.img then aligned Ignition, ramdisk and nmstate archives', async t => {
  const dir = t.testdir()
  const isos = goldenIsos(dir)
  const image = await IsoImage.open(isos.get('embed-areas-2023-07.x86_64')!)
  const pool = new FilePool()
  t.teardown(async () => { await image.close(); await pool.close() })
  const artifacts = await findBootArtifacts(image)
  t.equal(artifacts.kernelName, 'vmlinuz')
  t.equal(artifacts.rootfs?.length, 12)
  const base = await rangeImage(artifacts.initrd!, pool)
  const ramdisk = filesArchive([{ name: 'etc/ramdisk-marker', mode: 0o100644, data: Buffer.from('ramdisk') }])
  const nmstate = filesArchive([{ name: 'usr/bin/nmstatectl', mode: 0o100755, data: Buffer.from('nm') }])
  const initrd = pxeInitrd(base, { ignition: Buffer.from('{"ignition":{}}'), ramdisk, nmstate })
  const bytes = await new ImageWriter().toBuffer(initrd)
  const original = await image.readFile(image.lookup('/images/pxeboot/initrd.img')!)
  t.ok(bytes.subarray(0, original.length).equals(original), 'starts with initrd.img unchanged')
  const ignitionAt = original.length + ((4 - (original.length % 4)) % 4)
  t.equal(ignitionAt % 4, 0)
  t.same([...bytes.subarray(ignitionAt, ignitionAt + 2)], [0x1f, 0x8b], 'Ignition archive at a 4-byte aligned offset')
  const files = initrdFiles(bytes.subarray(ignitionAt))
  t.equal(files.get('config.ign')?.toString(), '{"ignition":{}}')
  t.equal(files.get('etc/ramdisk-marker')?.toString(), 'ramdisk')
  t.equal(files.get('usr/bin/nmstatectl')?.toString(), 'nm')
  const withoutRamdisk = pxeInitrd(base, { ignition: Buffer.from('{}'), nmstate })
  t.notOk(initrdFiles((await new ImageWriter().toBuffer(withoutRamdisk)).subarray(ignitionAt)).has('usr/bin/nmstatectl'), 'nmstate only with a ramdisk')
  t.not(initrd.etag, withoutRamdisk.etag)
})

t.test('s390x: addrsize keeps the load address and carries the PXE initrd size', async t => {
  const dir = t.testdir()
  const image = await IsoImage.open(goldenIsos(dir).get('embed-areas-2023-07.s390x')!)
  t.teardown(() => image.close())
  const artifacts = await findBootArtifacts(image)
  t.same([...artifacts.addrsizePrefix!], [0, 0, 0, 0, 2, 0, 0, 0])
  const addrsize = initrdAddrsize(artifacts.addrsizePrefix!, 123456)
  t.equal(addrsize.length, 16)
  t.equal(addrsize.readBigUInt64BE(8), 123456n)
  t.ok(artifacts.insFile, 'generic.ins found')
  t.ok(artifacts.kernel, 'kernel found')
})
