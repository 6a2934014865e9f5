import t, { type Test } from 'tap'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { IsoFormatError } from '../../../services/errors.ts'
import { masterCoreosIso } from '../../fixtures/coreos-iso.ts'
import { goldenIsos, isoinfoListing, sfdiskPartitions, xorrisoBootImages } from '../../fixtures/iso-report.ts'
import { missingTools, run } from '../../fixtures/tools.ts'

async function checkAgainstTools (t: Test, path: string): Promise<IsoImage> {
  const image = await IsoImage.open(path)
  t.teardown(() => image.close())
  const ours = new Map([...image.walk()].map(e => [e.path, { lba: e.lba, size: e.size, isDirectory: e.isDirectory }]))
  const listing = isoinfoListing(path, image.hasRockRidge ? '-R' : image.joliet !== undefined ? '-J' : 'primary')
  t.same(ours, listing, 'same files, LBAs and sizes as isoinfo')
  const boot = xorrisoBootImages(path)
  t.same((image.bootCatalog?.entries ?? []).map(e => ({ platform: e.platform, loadSectors: e.loadSectors, lba: e.lba })),
    boot.map(b => ({ platform: b.platform, loadSectors: b.loadSectors, lba: b.lba })), 'same El Torito entries as xorriso')
  const mbr = image.systemArea.mbr?.partitions ?? []
  if (mbr.length > 0) {
    t.same(mbr.map(p => ({ start: p.startLba, size: p.sectors, type: p.type.toString(16), ...(p.status === 0x80 ? { bootable: true } : {}) })),
      sfdiskPartitions(path), 'same MBR partitions as sfdisk')
  }
  return image
}

t.test('golden CoreOS ISOs', { skip: missingTools('xz', 'isoinfo', 'xorriso', 'sfdisk') }, async t => {
  const isos = goldenIsos(t.testdir())
  t.ok(isos.size >= 10)
  for (const [name, path] of isos) {
    await t.test(name, async t => {
      const image = await checkAgainstTools(t, path)
      if (name === 'synthetic') {
        t.equal(image.hasRockRidge, false)
        t.equal(image.lookup('/largedir/100.dat')?.size, 4, 'primary names match case-insensitively')
        const large = image.lookup('/LARGEDIR')!
        t.equal(large.size, 8192)
        t.ok(large.children!.length > 100, 'a directory spanning several sectors is read whole')
        return
      }
      t.match(image.volumeId, /^(fedora-coreos|rhcos|scos)-|^coreos/i)
      t.ok(image.hasRockRidge, 'Rock Ridge found')
      t.ok(image.joliet === undefined || image.joliet.level >= 1)
      const ignition = image.lookup('/images/ignition.img') ?? image.lookup('/images/cdboot.img')
      t.ok(ignition, 'an Ignition embed area file is found')
      // Primary-name fallback: coreos-installer asks for 8.3 upper-case names.
      for (const entry of image.walk()) {
        if (entry.isDirectory) continue
        const primaryPath = entry.path.split('/').map((part, i, all) => i === all.length - 1
          ? entry.primaryName.replace(/;1$/, '').replace(/\.$/, '')
          : part).join('/')
        t.equal(image.lookup(primaryPath.toUpperCase())?.lba, entry.lba, `8.3 lookup ${primaryPath}`)
      }
    })
  }
})

t.test('reads files with every name form and returns their bytes', { skip: missingTools('xz', 'isoinfo') }, async t => {
  const isos = goldenIsos(t.testdir())
  const image = await IsoImage.open(isos.get('embed-areas-2023-07.x86_64')!)
  t.teardown(() => image.close())
  const kargs = image.lookup('/coreos/kargs.json')!
  t.equal(image.lookup('COREOS/KARGS.JSO'), kargs)
  t.equal(image.lookup('coreos/kargs.json;1')?.lba ?? kargs.lba, kargs.lba)
  t.equal(image.lookup('/coreos/KARGS.json'), undefined, 'Rock Ridge names are case-sensitive and 8.3 does not match the long name')
  t.equal(kargs.byteOffset, kargs.lba * 2048)
  const bytes = await image.readFile(kargs)
  t.equal(bytes.toString('latin1'), run('isoinfo', ['-R', '-x', '/coreos/kargs.json', '-i', image.identity.path]))
  t.match(JSON.parse(bytes.toString()), { size: 1139 })
  t.equal(image.lookup('/images/pxeboot/vmlinuz')?.primaryName, 'VMLINUZ.;1')
  t.equal(image.lookup('/IMAGES/PXEBOOT/VMLINUZ')?.path, '/images/pxeboot/vmlinuz')
  t.equal(image.lookup('/images/pxeboot/vmlinuz')?.rockRidge?.mode, 0o100444)
  t.equal(image.primary.volumeSetId, 'fedora-coreos-38.20230718.dev.0')
  t.equal(image.systemArea.gpt?.partitions.length, 2)
})

t.test('ISOs mastered with genisoimage + isohybrid --uefi and with xorriso', { skip: missingTools('genisoimage', 'isohybrid', 'isoinfo', 'xorriso', 'sfdisk', '/usr/lib/ISOLINUX/isolinux.bin') }, async t => {
  const dir = t.testdir()
  const mastered = masterCoreosIso(dir, { extraFiles: { 'images/genericdvd.prm': 'a', 'images/generic.prm': 'b', 'images/initrd.addrsize': Buffer.alloc(16) } })
  const image = await checkAgainstTools(t, mastered.path)
  t.equal(image.volumeId, 'rhcos-418.94.202501221327-0')
  t.equal(image.bootCatalog?.entries.length, 2)
  t.equal(image.systemArea.mbr?.partitions.length, 2)
  t.equal(image.lookup('/images/initrd.addrsize')?.primaryName, 'INITRD.ADD;1')

  const xorrisoIso = `${dir}/xorriso.iso`
  run('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'scos-9.0.20250101-0', '-R', '-J', '-joliet-long',
    '-eltorito-boot', 'isolinux/isolinux.bin', '-eltorito-catalog', 'isolinux/boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table',
    '-eltorito-alt-boot', '-e', 'images/efiboot.img', '-no-emul-boot',
    '-isohybrid-mbr', '/usr/lib/ISOLINUX/isohdpfx.bin', '-isohybrid-gpt-basdat', '-o', xorrisoIso, mastered.root])
  const other = await checkAgainstTools(t, xorrisoIso)
  t.equal(other.volumeId, 'scos-9.0.20250101-0')
  t.ok(other.systemArea.gpt, 'GPT found')
})

t.test('malformed input is an IsoFormatError naming the structure', async t => {
  const dir = t.testdir({ 'empty.iso': '', 'zeros.iso': Buffer.alloc(40000) })
  await t.rejects(IsoImage.open(`${dir}/empty.iso`), IsoFormatError)
  await t.rejects(IsoImage.open(`${dir}/zeros.iso`), { code: 'ISO_FORMAT', message: /volume descriptor 16: missing CD001/ })
})
