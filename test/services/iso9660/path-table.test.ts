import t from 'tap'
import { SECTOR } from '../../../services/iso9660/bytes.ts'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { pathTableSize, readPathTable, writePathTable, type PathTableRecord } from '../../../services/iso9660/records.ts'
import { readContent } from '../../../services/iso9660/remaster.ts'
import { planIso, type IsoNode } from '../../../services/iso9660/writer.ts'
import { materialize } from '../../fixtures/materialize.ts'

t.test('a path table written little- and big-endian reads back as the same records', async t => {
  const records: PathTableRecord[] = [
    { identifier: Buffer.from([0]), lba: 20, parent: 1 },
    { identifier: Buffer.from('EFI'), lba: 21, parent: 1 },
    { identifier: Buffer.from('IMAGES'), lba: 0x01020304, parent: 1 },
    { identifier: Buffer.from('BOOT'), lba: 23, parent: 2 }
  ]
  const size = pathTableSize(records.map(r => r.identifier.length))
  t.equal(size, (8 + 1 + 1) + (8 + 3 + 1) + (8 + 6) + (8 + 4), 'odd identifiers are padded to even')
  for (const bigEndian of [false, true]) {
    const bytes = writePathTable(records, bigEndian)
    t.equal(bytes.length, size)
    t.same(readPathTable(bytes, bigEndian, 'path table'), records, bigEndian ? 'M table' : 'L table')
    // On disk the table is followed by the rest of its sector: a zero length ends it.
    t.same(readPathTable(Buffer.concat([bytes, Buffer.alloc(SECTOR - size)]), bigEndian, 'path table'), records, 'sector padding is not a record')
  }
  t.equal(writePathTable(records, true).readUInt32BE(10 + 12 + 2), 0x01020304, 'M table fields are big-endian')
  t.throws(() => readPathTable(writePathTable(records, false).subarray(0, size - 2), false, 'path table'), /path table: field at/, 'a record cut off is an IsoFormatError')
})

t.test('the writer\'s path tables, read back by the reader, index every directory breadth-first', async t => {
  const dir = t.testdir()
  const file = (name: string): IsoNode => ({ name, content: { kind: 'buffer', data: Buffer.from(name) } })
  const root: IsoNode = {
    name: '',
    children: [
      { name: 'isolinux', children: [file('isolinux.cfg')] },
      { name: 'images', children: [{ name: 'pxeboot', children: [file('vmlinuz')] }, file('efiboot.img')] },
      { name: 'EFI', children: [{ name: 'fedora', children: [file('grub.cfg')] }] }
    ]
  }
  const plan = await planIso(root, {
    volume: { systemId: 'LINUX', volumeId: 'path-table', volumeSetId: 'path-table', created: Buffer.from('2025012213270000\0', 'latin1') },
    rockRidge: true,
    joliet: true,
    readContent
  })
  const out = `${dir}/tree.iso`
  await materialize(plan, out)
  const image = await IsoImage.open(out)
  t.teardown(() => image.close())

  const primary = await image.readPathTable()
  t.same(primary.map(r => [r.name, r.parent]), [['', 1], ['EFI', 1], ['IMAGES', 1], ['ISOLINUX', 1], ['FEDORA', 2], ['PXEBOOT', 3]])
  t.same(primary.map(r => r.lba), [image.root, ...['/EFI', '/images', '/isolinux', '/EFI/fedora', '/images/pxeboot'].map(p => image.lookup(p)!)].map(e => e.lba))

  const joliet = await image.readPathTable(image.joliet!)
  t.same(joliet.map(r => [r.name, r.parent]), [['', 1], ['EFI', 1], ['images', 1], ['isolinux', 1], ['fedora', 2], ['pxeboot', 3]], 'Joliet names, same order')

  for (const volume of [image.primary, image.joliet!]) {
    const { size, lLba, mLba } = volume.pathTable
    const l = readPathTable(await image.readAt(lLba * SECTOR, size), false, 'L path table')
    const m = readPathTable(await image.readAt(mLba * SECTOR, size), true, 'M path table')
    t.same(m, l, 'the big-endian copy holds the same records')
    t.equal(size, pathTableSize(l.map(r => r.identifier.length)), 'the descriptor states the table\'s size')
  }
})
