import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { FilePool } from '../../../services/compose/file-pool.ts'
import { ImageWriter } from '../../../services/compose/image-writer.ts'
import { customize, fileTemplate } from '../../../services/coreos/customize.ts'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { initrdFiles } from '../../fixtures/initrd-reader.ts'
import { masterCoreosIso } from '../../fixtures/coreos-iso.ts'
import { goldenIsos } from '../../fixtures/iso-report.ts'
import { missingTools, run } from '../../fixtures/tools.ts'
import { materialize } from '../../fixtures/materialize.ts'

const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/hostname","contents":{"source":"data:,host-1"}}]}}')

/** Every byte offset at which two buffers differ, as [start, end) runs. */
function differingRuns (a: Buffer, b: Buffer): Array<[number, number]> {
  const runs: Array<[number, number]> = []
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue
    const last = runs[runs.length - 1]
    if (last !== undefined && last[1] === i) last[1] = i + 1
    else runs.push([i, i + 1])
  }
  return runs
}

t.test('customized x86_64 ISO: Ignition and kargs embedded, nothing else changed', { skip: missingTools('genisoimage', 'isohybrid', 'isoinfo', '/usr/lib/ISOLINUX/isolinux.bin') }, async t => {
  const dir = t.testdir()
  const mastered = masterCoreosIso(dir)
  const image = await IsoImage.open(mastered.path)
  const pool = new FilePool()
  t.teardown(async () => { await image.close(); await pool.close() })
  const template = await fileTemplate(image, 'full-iso', 'x86_64', pool)
  t.equal(template.areas.kargs.length, 2)
  t.equal(template.areas.kargs[0]!.current, mastered.kargsDefault)
  const custom = customize(template, { ignition: IGNITION, kargs: ['console=ttyS0', 'rd.debug'] })
  t.equal(custom.size, template.image.size, 'same size as the template')
  const original = readFileSync(mastered.path)
  const out = `${dir}/custom.iso`
  await materialize(custom, out)
  const bytes = readFileSync(out)
  const areas = [template.areas.ignition!, ...template.areas.kargs]
  for (const [start, end] of differingRuns(original, bytes)) {
    t.ok(areas.some(a => start >= a.offset && end <= a.offset + a.length), `difference ${start}-${end} lies inside an embed area`)
  }
  const ign = template.areas.ignition!
  t.same(initrdFiles(bytes.subarray(ign.offset, ign.offset + ign.length)).get('config.ign'), IGNITION, 'Ignition area decodes to the config')
  for (const path of [mastered.grubPath, 'isolinux/isolinux.cfg']) {
    const text = run('isoinfo', ['-R', '-x', `/${path}`, '-i', out])
    t.equal(text.length, mastered.files[path]!.length, `${path} keeps its size`)
    t.match(text, `${mastered.kargsDefault} console=ttyS0 rd.debug\n###`, `${path} carries the kargs`)
    t.match(text, /#\n?# COREOS_KARG_EMBED_AREA\n/)
  }
})

t.test('too large: typed error naming both sizes; no kargs area on s390x legacy: 400', async t => {
  const dir = t.testdir()
  const isos = goldenIsos(dir)
  const pool = new FilePool()
  t.teardown(() => pool.close())
  const x86 = await IsoImage.open(isos.get('embed-areas-2023-07.x86_64')!)
  t.teardown(() => x86.close())
  const template = await fileTemplate(x86, 'full-iso', 'x86_64', pool)
  const huge = Buffer.from(randomBytes(300000).toString('base64'))
  t.throws(() => customize(template, { ignition: huge }), { code: 'IMG_EMBED_AREA_TOO_SMALL', message: /Ignition content of \d+ bytes does not fit the 262144-byte embed area/ })
  t.throws(() => customize(template, { ignition: IGNITION, kargs: ['x'.repeat(1200)] }), { code: 'IMG_EMBED_AREA_TOO_SMALL', message: /do not fit the 1139-byte area/ })

  const legacy = await IsoImage.open(isos.get('embed-areas-2023-03.s390x')!)
  t.teardown(() => legacy.close())
  const s390 = await fileTemplate(legacy, 'full-iso', 's390x', pool)
  t.equal(s390.areas.kargs.length, 0)
  t.throws(() => customize(s390, { ignition: IGNITION, kargs: ['a'] }), { code: 'IMG_KARGS_UNSUPPORTED', message: 'kargs cannot be modified in s390x architecture ISOs' })
  t.doesNotThrow(() => customize(s390, { ignition: IGNITION, kargs: [] }), 'an empty list is no kargs')
})

t.test('golden ISOs: every one customizes; s390x kargs land in cdboot.img', async t => {
  const dir = t.testdir()
  const pool = new FilePool()
  t.teardown(() => pool.close())
  for (const [name, path] of goldenIsos(dir)) {
    if (name === 'synthetic') continue
    const image = await IsoImage.open(path)
    const arch = name.includes('s390x') ? 's390x' : 'x86_64'
    const template = await fileTemplate(image, 'full-iso', arch, pool)
    const kargs = template.areas.kargs.length > 0 ? ['console=ttysclp0'] : []
    const custom = customize(template, { ignition: IGNITION, kargs })
    const bytes = await new ImageWriter().toBuffer(custom)
    const ign = template.areas.ignition!
    t.same(initrdFiles(bytes.subarray(ign.offset, ign.offset + ign.length)).get('config.ign'), IGNITION, `${name}: Ignition decodes`)
    for (const area of template.areas.kargs) {
      const region = bytes.subarray(area.offset, area.offset + area.length).toString('latin1')
      t.ok(region.startsWith(`${area.current === '' ? ' ' : `${area.current} `}console=ttysclp0${area.end}`), `${name}: ${area.name}`)
      t.ok(region.endsWith(area.pad), 'padded')
    }
    if (name === 'embed-areas-2023-07.s390x') {
      t.equal(template.areas.kargs[0]!.path, 'images/cdboot.img')
      t.equal(template.areas.kargs[0]!.pad, '\0')
      t.ok(ign.offset > image.lookup('/images/cdboot.img')!.byteOffset, 'Ignition area inside cdboot.img')
    }
    if (name === 'embed-areas-2021-01') t.ok(template.areas.kargs.length > 0, 'kargs.json-less ISO: areas found by their marker')
    await image.close()
  }
})
