import t from 'tap'
import { mkdirSync, readFileSync, writeFileSync, existsSync, closeSync, openSync, ftruncateSync, writeSync } from 'node:fs'
import { buildSyntheticIso } from '../../../services/coreos/synthetic-iso.ts'
import { ImageStore } from '../../../services/store/image-store.ts'
import { initrdFiles } from '../../../services/cpio/reader.ts'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { missingTools, run } from '../../fixtures/tools.ts'

t.test('nmstatectl comes out of the squashfs inside rootfs.img, packaged and cached', { skip: missingTools('mksquashfs', 'unsquashfs') }, async t => {
  const dir = t.testdir({ tree: { usr: { bin: { nmstatectl: '#!/bin/sh\necho nmstatectl 2.2\n' } } }, iso: {} })
  run('mksquashfs', [`${dir}/tree`, `${dir}/root.squashfs`, '-quiet', '-noappend', '-all-root'])
  const squashfs = readFileSync(`${dir}/root.squashfs`)
  // rootfs.img: newc header for root.squashfs, the filesystem at byte 124, sparse up to 100 MiB.
  const name = 'root.squashfs\0'
  const header = `070701${[0, 0o100644, 0, 0, 1, 0, squashfs.length, 0, 0, 0, 0, name.length, 0].map(n => n.toString(16).padStart(8, '0')).join('')}${name}`
  const fd = openSync(`${dir}/rootfs.img`, 'w')
  writeSync(fd, Buffer.from(header, 'latin1'))
  writeSync(fd, squashfs, 0, squashfs.length, 124)
  ftruncateSync(fd, 100 << 20)
  closeSync(fd)
  const iso = await buildSyntheticIso({ dir: `${dir}/iso`, volumeId: 'rhcos-418.94.9', rootfsFile: `${dir}/rootfs.img` })
  mkdirSync(`${dir}/data`)
  const warnings: string[] = []
  const store = new ImageStore({
    config: { dataDir: `${dir}/data`, dataTempDir: `${dir}/data/tmp`, imageServiceBaseUrl: 'http://h', osImagesRequestHeaders: {}, osImagesRequestQueryParams: {}, insecureSkipVerify: false, proxy: {},
      osImages: [{ openshiftVersion: '4.18.0-ec.1', cpuArchitecture: 'x86_64', version: '418.94.9', type: 'full-iso', url: `file://${iso}` }] },
    log: { info: () => {}, warn: (_o, msg) => warnings.push(msg), error: () => {} },
    timing: { retryBaseMs: 50 }
  })
  t.teardown(() => store.close())
  await store.start()
  await store.settled()
  const prepared = store.get('418.94.9@x86_64@full-iso')!
  t.ok(prepared, 'ready')
  t.same(warnings, [])
  t.equal(readFileSync(`${dir}/data/nmstatectl-418.94.9-x86_64`, 'utf8'), '#!/bin/sh\necho nmstatectl 2.2\n', 'binary cached under the upstream name')
  const files = initrdFiles(prepared.nmstate!)
  t.equal(files.get('usr/bin/nmstatectl')?.toString(), '#!/bin/sh\necho nmstatectl 2.2\n')
  const minimalPath = `${dir}/minimal.iso`
  await prepared.templates['minimal-iso']!.image.saveSparse(minimalPath)
  const minimal = await IsoImage.open(minimalPath)
  t.teardown(() => minimal.close())
  t.ok(minimal.lookup('/images/nmstate.img'), 'the minimal ISO carries nmstate.img')
  t.ok(existsSync(`${dir}/data/nmstatectl-418.94.9-x86_64`))
  writeFileSync(`${dir}/unused`, '')
})

t.test('without the tools or the binary: a warning, and the image still serves', async t => {
  const dir = t.testdir({ iso: {}, data: {} })
  const iso = await buildSyntheticIso({ dir: `${dir}/iso`, volumeId: 'rhcos-418.94.10' })
  const warnings: string[] = []
  const store = new ImageStore({
    config: { dataDir: `${dir}/data`, dataTempDir: `${dir}/data/tmp`, imageServiceBaseUrl: 'http://h', osImagesRequestHeaders: {}, osImagesRequestQueryParams: {}, insecureSkipVerify: false, proxy: {},
      osImages: [{ openshiftVersion: '4.19', cpuArchitecture: 'x86_64', version: '418.94.10', type: 'full-iso', url: `file://${iso}` }] },
    log: { info: () => {}, warn: (_o, msg) => warnings.push(msg), error: () => {} }
  })
  t.teardown(() => store.close())
  await store.start()
  await store.settled()
  t.ok(store.allReady())
  t.same(warnings, ['nmstatectl not extracted; serving without nmstate'])
  t.equal(store.get('418.94.10@x86_64@full-iso')?.nmstate, undefined)
})
