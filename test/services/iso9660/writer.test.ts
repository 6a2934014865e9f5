import t from 'tap'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { optionsFromImage, readContent, treeFromImage } from '../../../services/iso9660/remaster.ts'
import { planIso, type IsoNode, type IsoWriteOptions } from '../../../services/iso9660/writer.ts'
import { PLATFORM } from '../../../services/iso9660/el-torito.ts'
import { masterCoreosIso } from '../../fixtures/coreos-iso.ts'
import { goldenIsos, isoinfoListing, sfdiskPartitions, xorrisoBootImages, xorrisoGptPartitions, xorrisoProblems } from '../../fixtures/iso-report.ts'
import { materialize } from '../../fixtures/materialize.ts'
import { missingTools, run } from '../../fixtures/tools.ts'

async function remaster (source: string, out: string) {
  const image = await IsoImage.open(source)
  const options = await optionsFromImage(image)
  const plan = await planIso(treeFromImage(image), options)
  await materialize(plan, out)
  return { image, plan }
}

const TOOLS = missingTools('xorriso', 'isoinfo', 'sfdisk', 'genisoimage', 'isohybrid', '/usr/lib/ISOLINUX/isolinux.bin')

t.test('round trip: golden and mastered ISOs rewritten by our writer', { skip: TOOLS }, async t => {
  const dir = t.testdir()
  const sources = goldenIsos(dir)
  sources.set('genisoimage-isohybrid', masterCoreosIso(`${dir}/mastered`).path)
  for (const [name, source] of sources) {
    await t.test(name, async t => {
      const out = `${dir}/${name}.out.iso`
      const { image, plan } = await remaster(source, out)
      t.teardown(() => image.close())
      t.equal(readFileSync(out).length, plan.size)
      t.same(xorrisoProblems(out), [], 'xorriso loads it without complaint')

      const written = await IsoImage.open(out)
      t.teardown(() => written.close())
      t.equal(written.volumeId, image.volumeId, 'volume id kept')
      t.equal(written.primary.volumeSetId, image.primary.volumeSetId, 'volume set id kept')
      const catalogLba = image.bootCatalog?.lba
      const sourceFiles = [...image.walk()].filter(e => !(e.lba === catalogLba && !e.isDirectory))
      const writtenFiles = [...written.walk()].filter(e => !(e.lba === written.bootCatalog?.lba && !e.isDirectory))
      t.same(writtenFiles.map(e => [e.path, e.size, e.primaryName]), sourceFiles.map(e => [e.path, e.isDirectory ? e.size : e.size, e.primaryName]).map(([p, s, n], i) => [p, writtenFiles[i]?.isDirectory === true ? writtenFiles[i]!.size : s, n]), 'same tree, names and sizes')
      for (const entry of sourceFiles) {
        if (entry.isDirectory) continue
        const copy = written.lookup(entry.path)!
        const same = (await written.readFile(copy)).equals(await image.readFile(entry))
        const isBootInfo = xorrisoBootImages(out).some(b => b.path === entry.path && b.bootInfoTable)
        if (!isBootInfo) t.ok(same, `bytes of ${entry.path}`)
        t.equal(plan.files.get(entry.path)?.lba, copy.size === 0 ? 0 : copy.lba)
      }

      const dirs = [written.root, ...[...written.walk()].filter(e => e.isDirectory)]
      const table = await written.readPathTable()
      t.same(table.map(r => r.lba).sort((a, b) => a - b), dirs.map(d => d.lba).sort((a, b) => a - b), 'the path table lists every directory')
      t.equal(table[0]!.parent, 1, 'root first, its own parent')
      if (written.joliet !== undefined) t.equal((await written.readPathTable(written.joliet)).length, dirs.length, 'Joliet path table too')

      const mode = written.hasRockRidge ? '-R' : written.joliet !== undefined ? '-J' : 'primary'
      const listing = isoinfoListing(out, mode)
      t.same(new Map([...listing].filter(([, v]) => !v.isDirectory).map(([p, v]) => [p, v.size])),
        new Map([...written.walk()].filter(e => !e.isDirectory).map(e => [e.path, e.size])), `isoinfo ${mode} lists our tree`)
      if (written.joliet !== undefined) {
        const joliet = isoinfoListing(out, '-J')
        t.same([...joliet.keys()].sort(), [...listing.keys()].sort(), 'Joliet tree matches')
      }

      const sourceBoot = xorrisoBootImages(source)
      const ourBoot = xorrisoBootImages(out)
      t.same(ourBoot.map(b => [b.platform, b.path, b.bootInfoTable, b.loadSectors]), sourceBoot.map(b => [b.platform, b.path, b.bootInfoTable, b.loadSectors]), 'same El Torito entries')
      for (const b of ourBoot.filter(b => b.bootInfoTable)) {
        const bytes = await written.readFile(written.lookup(b.path!)!)
        t.equal(bytes.readUInt32LE(8), 16, 'boot-info-table: PVD LBA')
        t.equal(bytes.readUInt32LE(12), b.lba, 'boot-info-table: file LBA')
        t.equal(bytes.readUInt32LE(16), bytes.length, 'boot-info-table: length')
      }

      if (image.systemArea.mbr !== undefined && image.systemArea.mbr.partitions.length > 0) {
        const efi = written.lookup('/images/efiboot.img')
        const parts = sfdiskPartitions(out)
        t.same(parts.map(p => p.type), sfdiskPartitions(source).map(p => p.type), 'same MBR partition types')
        t.equal(parts[0]!.size * 512, plan.size, 'partition 1 spans the padded image')
        t.equal(plan.size % (1 << 20), 0, 'padded to a MiB like isohybrid')
        if (efi !== undefined) t.equal(parts[1]!.start, efi.lba * 4, 'EFI partition follows efiboot.img')
        if (image.systemArea.gpt !== undefined) {
          const gpt = xorrisoGptPartitions(out)
          t.same(gpt[0], [0, plan.volumeSectors * 4], 'GPT partition 1 covers the ISO')
          if (efi !== undefined) t.equal(gpt[1]![0], efi.lba * 4, 'GPT partition 2 follows efiboot.img')
        }
        const bios = written.bootCatalog?.entries.find(e => e.platform === PLATFORM.x86)
        if (bios !== undefined) t.equal(written.systemArea.mbr!.bootCode.readUInt32LE(432), bios.lba * 4, 'isohdpfx points at isolinux.bin')
      }
    })
  }
})

t.test('the same input gives byte-identical output', async t => {
  const dir = t.testdir()
  const source = goldenIsos(dir).get('embed-areas-2023-07.x86_64')!
  for (const out of ['a', 'b']) {
    const { image } = await remaster(source, `${dir}/${out}.iso`)
    await image.close()
  }
  const hash = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex')
  t.equal(hash(`${dir}/a.iso`), hash(`${dir}/b.iso`))
})

t.test('a tree built from buffers: 8.3 collisions, long names, deep paths', { skip: missingTools('xorriso', 'isoinfo') }, async t => {
  const dir = t.testdir()
  const longName = `${'very-long-name-'.repeat(14)}end.txt`
  const file = (name: string, text: string): IsoNode => ({ name, content: { kind: 'buffer', data: Buffer.from(text) } })
  const root: IsoNode = {
    name: '',
    children: [
      { name: 'images', children: [file('genericdvd.prm', 'dvd'), file('generic.prm', 'plain'), file('genericdvd.prx', 'x'), file('genericdvd.pry', 'y')] },
      { name: 'deep', children: [{ name: 'a', children: [{ name: 'b', children: [{ name: 'c', children: [file('leaf.bin', 'leaf')] }] }] }] },
      file(longName, 'long'),
      file('Mixed Case.Name.tar.gz', 'mixed'),
      file('empty', '')
    ]
  }
  const options: IsoWriteOptions = {
    volume: { systemId: 'LINUX', volumeId: 'rhcos-test', volumeSetId: 'rhcos-test-set', created: Buffer.from('2025012213270000\0', 'latin1') },
    rockRidge: true,
    joliet: true,
    readContent
  }
  const plan = await planIso(root, options)
  const out = `${dir}/tree.iso`
  await materialize(plan, out)
  t.same(xorrisoProblems(out), [])
  const listing = isoinfoListing(out, '-R')
  t.ok(listing.has(`/${longName}`), 'a 200+ character Rock Ridge name survives (CE continuation)')
  t.ok(listing.has('/deep/a/b/c/leaf.bin'))
  t.equal(listing.get('/empty')?.size, 0)
  const primary = isoinfoListing(out, 'primary')
  const images = [...primary.keys()].filter(p => p.startsWith('/IMAGES/')).sort()
  t.equal(new Set(images).size, 4, 'four distinct 8.3 names')
  t.ok(images.includes('/IMAGES/GENERICD.PRM'))
  t.equal(run('isoinfo', ['-R', '-x', '/images/genericdvd.prm', '-i', out]), 'dvd')
  t.equal(run('isoinfo', ['-R', '-x', '/images/generic.prm', '-i', out]), 'plain')
  t.equal(run('isoinfo', ['-J', '-x', '/Mixed Case.Name.tar.gz', '-i', out]), 'mixed')
  const image = await IsoImage.open(out)
  t.teardown(() => image.close())
  t.equal(image.primary.volumeSetId, 'rhcos-test-set')
  t.equal(image.lookup(`/${longName}`)?.size, 4)
})

t.test('a source GPT with other than 128 entries: the backup GPT and the padding add up to the plan size', async t => {
  const { crc32 } = await import('node:zlib')
  const { segmentLength } = await import('../../../services/compose/segment.ts')
  const { writeFileSync } = await import('node:fs')
  const dir = t.testdir()
  const golden = [...goldenIsos(dir).values()]
  let checked = 0
  for (const source of golden) {
    const probe = await IsoImage.open(source)
    const hasGpt = probe.systemArea.gpt !== undefined
    await probe.close()
    if (!hasGpt) continue
    for (const entryCount of [4, 64, 200]) {
      const bytes = readFileSync(source)
      const header = bytes.subarray(512, 1024)
      header.writeUInt32LE(entryCount, 80)
      header.writeUInt32LE(crc32(bytes.subarray(1024, 1024 + entryCount * 128)), 88)
      header.writeUInt32LE(0, 16)
      header.writeUInt32LE(crc32(header.subarray(0, 92)), 16)
      const patched = `${dir}/gpt-${entryCount}.iso`
      writeFileSync(patched, bytes)
      const out = `${dir}/gpt-${entryCount}.out.iso`
      const { image, plan } = await remaster(patched, out)
      await image.close()
      t.equal(plan.segments.reduce((sum, s) => sum + segmentLength(s), 0), plan.size, `${entryCount} entries: segments add up to the plan size`)
      const written = readFileSync(out)
      t.equal(written.length, plan.size)
      const backup = written.subarray(written.length - 512)
      t.equal(backup.toString('latin1', 0, 8), 'EFI PART', `${entryCount} entries: the backup header is the last sector`)
      t.equal(backup.readUInt32LE(80), entryCount)
      const entrySectors = Math.ceil(entryCount * 128 / 512)
      t.equal(Number(backup.readBigUInt64LE(72)), written.length / 512 - 1 - entrySectors, 'its entries sit right before it')
      t.equal(crc32(written.subarray(written.length - 512 - entrySectors * 512, written.length - 512 - entrySectors * 512 + entryCount * 128)), backup.readUInt32LE(88), 'entries CRC matches')
      checked++
    }
  }
  t.ok(checked >= 3, `${checked} remasters checked`)
})

t.test('a protective MBR (xorriso --protective-msdos-label, as grub-mkrescue writes for ppc64le) is kept and resized', { skip: missingTools('xorriso', 'sfdisk') }, async t => {
  const dir = t.testdir({ tree: { 'a.txt': 'hello\n', ppc: { 'bootinfo.txt': '<chrp-boot></chrp-boot>\n' } } })
  // grub-mkrescue's powerpc-ieee1275 options: a protective label from sector 1, and an APM with HFS+ for Apple firmware.
  run('xorriso', ['-as', 'mkisofs', '-R', '-J', '--protective-msdos-label', '-hfsplus', '-apm-block-size', '2048', '-o', `${dir}/src.iso`, `${dir}/tree`])
  const source = await IsoImage.open(`${dir}/src.iso`)
  t.teardown(() => source.close())
  t.same(source.systemArea.mbr?.partitions.map(p => [p.type, p.startLba]), [[0xcd, 1]], 'the source: partition 1 from sector 1')
  await materialize(await planIso(treeFromImage(source), await optionsFromImage(source)), `${dir}/out.iso`)
  const out = await IsoImage.open(`${dir}/out.iso`)
  t.teardown(() => out.close())
  const [label] = out.systemArea.mbr!.partitions
  t.same({ type: label!.type, start: label!.startLba, end: label!.startLba + label!.sectors }, { type: 0xcd, start: 1, end: out.identity.size / 512 }, 'still from sector 1, to the end of the rewritten image')
  t.same(sfdiskPartitions(`${dir}/out.iso`).map(p => [p.start, p.type]), [[1, 'cd']], 'sfdisk reads the same')
  t.same(xorrisoProblems(`${dir}/out.iso`), [], 'xorriso loads it without complaint')
  t.not(readFileSync(`${dir}/out.iso`).toString('latin1', 2048, 2050), 'PM', 'the APM (and so HFS+) is not carried into a rewritten image: its blocks would point at moved data')
})
