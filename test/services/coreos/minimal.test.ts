import t from 'tap'
import { FilePool } from '../../../services/compose/file-pool.ts'
import { customize } from '../../../services/coreos/customize.ts'
import { buildMinimalTemplate, editBootConfig } from '../../../services/coreos/minimal-template.ts'
import { filesArchive } from '../../../services/coreos/ignition-archive.ts'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { initrdFiles } from '../../fixtures/initrd-reader.ts'
import { masterCoreosIso } from '../../fixtures/coreos-iso.ts'
import { goldenIsos, isoinfoListing, xorrisoBootImages, xorrisoProblems } from '../../fixtures/iso-report.ts'
import { materialize } from '../../fixtures/materialize.ts'
import { missingTools, run } from '../../fixtures/tools.ts'

const ROOTFS_URL = 'https://images.example:8080/boot-artifacts/rootfs?arch=x86_64&version=418.94.202501221327-0'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')

t.test('minimal template from a mastered x86_64 ISO', { skip: missingTools('genisoimage', 'isohybrid', 'isoinfo', 'xorriso', 'sfdisk', '/usr/lib/ISOLINUX/isolinux.bin') }, async t => {
  const dir = t.testdir()
  const mastered = masterCoreosIso(dir, { rootfsSize: 8 << 20 })
  const image = await IsoImage.open(mastered.path)
  const pool = new FilePool()
  t.teardown(async () => { await image.close(); await pool.close() })
  const nmstate = filesArchive([{ name: 'usr/bin/nmstatectl', mode: 0o100755, data: Buffer.from('binary') }])
  const started = performance.now()
  const template = await buildMinimalTemplate(image, { arch: 'x86_64', rootfsUrl: ROOTFS_URL, nmstate }, pool)
  t.comment(`built in ${(performance.now() - started).toFixed(1)} ms`)
  t.ok(template.image.size < image.identity.size, 'smaller than the full ISO')
  const out = `${dir}/minimal.iso`
  await materialize(template.image, out)
  t.same(xorrisoProblems(out), [])
  const listing = isoinfoListing(out, '-R')
  t.notOk(listing.has('/images/pxeboot/rootfs.img'), 'no rootfs.img')
  t.equal(listing.get('/images/assisted_installer_custom.img')?.size, 1 << 20)
  t.equal(listing.get('/images/nmstate.img')?.size, nmstate.length)
  t.equal(xorrisoBootImages(out).length, 2, 'BIOS and UEFI boot entries kept')
  const written = await IsoImage.open(out)
  t.teardown(() => written.close())
  t.equal(written.volumeId, mastered.volumeId, 'volume id kept')
  t.ok(written.systemArea.gpt, 'isohybrid GPT kept')

  const grub = run('isoinfo', ['-R', '-x', `/${mastered.grubPath}`, '-i', out])
  t.notMatch(grub, /coreos\.liveiso=/)
  t.match(grub, `ignition.platform.id=metal coreos.live.rootfs_url="${ROOTFS_URL}"\n`)
  t.match(grub, 'initrd /images/pxeboot/initrd.img /images/ignition.img /images/assisted_installer_custom.img /images/nmstate.img\n')
  const isolinux = run('isoinfo', ['-R', '-x', '/isolinux/isolinux.cfg', '-i', out])
  t.match(isolinux, 'append initrd=/images/pxeboot/initrd.img,/images/ignition.img,/images/assisted_installer_custom.img,/images/nmstate.img rw ignition.firstboot')

  const kargsJson = JSON.parse(run('isoinfo', ['-R', '-x', '/coreos/kargs.json', '-i', out])) as { default: string, size: number, files: Array<{ path: string, offset: number }> }
  t.equal(kargsJson.default, `rw ignition.firstboot ignition.platform.id=metal coreos.live.rootfs_url="${ROOTFS_URL}"`)
  t.equal(kargsJson.size - kargsJson.default.length, mastered.kargsSize - mastered.kargsDefault.length, 'size moved with the default')
  for (const f of kargsJson.files) {
    const text = f.path.startsWith('EFI') ? grub : isolinux
    t.ok(text.slice(f.offset, f.offset + kargsJson.size).startsWith(`${kargsJson.default}\n###`), `kargs.json area matches ${f.path}`)
    t.ok(text.slice(f.offset + kargsJson.size).startsWith('# COREOS_KARG_EMBED_AREA'), 'the marker follows the area')
  }

  // A customized minimal ISO still takes Ignition, ramdisk and kargs.
  const ramdisk = filesArchive([{ name: 'etc/NetworkManager/system-connections/eth0.nmconnection', mode: 0o100600, data: Buffer.from('[connection]\n') }])
  const custom = customize(template, { ignition: IGNITION, ramdisk, kargs: ['console=ttyS0'] })
  t.equal(custom.size, template.image.size)
  const customOut = `${dir}/custom-minimal.iso`
  await materialize(custom, customOut)
  t.match(run('isoinfo', ['-R', '-x', `/${mastered.grubPath}`, '-i', customOut]), `coreos.live.rootfs_url="${ROOTFS_URL}" console=ttyS0\n###`)
  const area = run('isoinfo', ['-R', '-x', '/images/assisted_installer_custom.img', '-i', customOut])
  t.equal(Buffer.from(area, 'latin1').subarray(0, ramdisk.length).toString('latin1'), ramdisk.toString('latin1'), 'ramdisk at the start of its area')
  t.ok(Buffer.from(area, 'latin1').subarray(ramdisk.length).every(b => b === 0), 'rest of the area zero')
  t.same(initrdFiles(Buffer.from(run('isoinfo', ['-R', '-x', '/images/ignition.img', '-i', customOut]), 'latin1')).get('config.ign'), IGNITION)
})

t.test('minimal template from the golden FCOS ISO keeps every kargs file exact', { skip: missingTools('xorriso') }, async t => {
  const dir = t.testdir()
  const image = await IsoImage.open(goldenIsos(dir).get('embed-areas-2023-07.x86_64')!)
  const pool = new FilePool()
  t.teardown(async () => { await image.close(); await pool.close() })
  const template = await buildMinimalTemplate(image, { arch: 'x86_64', rootfsUrl: ROOTFS_URL }, pool)
  t.equal(template.areas.kargs.length, 2)
  for (const area of template.areas.kargs) t.match(area.current, /ignition\.platform\.id=metal coreos\.live\.rootfs_url=/)
  t.ok(template.areas.ramdisk)
  const out = `${dir}/minimal.iso`
  await materialize(template.image, out)
  t.same(xorrisoProblems(out), [])
})

t.test('refuses a rootfs URL that grub would expand', async t => {
  const dir = t.testdir()
  const image = await IsoImage.open(goldenIsos(dir).get('embed-areas-2023-07.x86_64')!)
  t.teardown(() => image.close())
  await t.rejects(buildMinimalTemplate(image, { arch: 'x86_64', rootfsUrl: 'http://x/$root' }, new FilePool()), { code: 'IMG_MINIMAL_TEMPLATE' })
  await t.rejects(buildMinimalTemplate(image, { arch: 'x86_64', rootfsUrl: 'http://x/a\\b' }, new FilePool()), { code: 'IMG_MINIMAL_TEMPLATE' })
})

t.test('editBootConfig shifts offsets only for edits before them', async t => {
  const isolinux = '  append initrd=/a.img,/b.img rw coreos.liveiso=x ignition.firstboot\n####\n'
  const offset = isolinux.indexOf('rw')
  const edited = editBootConfig(isolinux, 'isolinux', 'http://h/r', ['/c.img'], offset)
  t.equal(edited.text, '  append initrd=/a.img,/b.img,/c.img rw ignition.firstboot coreos.live.rootfs_url="http://h/r"\n####\n')
  t.equal(edited.kargsOffset, offset + ',/c.img'.length)
  t.equal(edited.text.slice(edited.kargsOffset!, edited.kargsOffset! + 2), 'rw')
})
