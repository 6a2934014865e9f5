import t from 'tap'
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { findEmbedAreas } from '../../services/coreos/embed-areas.ts'
import { isoImageView } from '../../services/coreos/customize.ts'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { startFakeAssisted } from '../fixtures/fake-assisted.ts'
import { initrdFiles } from '../fixtures/initrd-reader.ts'
import { missingTools, run } from '../fixtures/tools.ts'
import { build } from '../helper.ts'

// A ppc64le live ISO as grub-mkrescue masters it: a protective MBR whose partition 1 (type 0xcd) starts at sector 1,
// inside the system area, and an APM with HFS+. Until this was handled, such an image was refused for ever.
const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const VERSION = '418.94.202501221327-0'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')

t.test('a ppc64le ISO with a protective MBR is served, full and minimal', { skip: missingTools('xorriso') }, async t => {
  const dir = t.testdir()
  mkdirSync(`${dir}/synthetic`)
  const synthetic = await buildSyntheticIso({ dir: `${dir}/synthetic`, volumeId: `rhcos-${VERSION}`, arch: 'ppc64le' })
  run('xorriso', ['-osirrox', 'on', '-indev', synthetic, '-extract', '/', `${dir}/tree`])
  // As on ppc64le: GRUB only, no isolinux.
  chmodSync(`${dir}/tree`, 0o755)
  chmodSync(`${dir}/tree/coreos`, 0o755)
  rmSync(`${dir}/tree/isolinux`, { recursive: true, force: true })
  const kargsPath = `${dir}/tree/coreos/kargs.json`
  const kargs = JSON.parse(readFileSync(kargsPath, 'utf8')) as { files: Array<{ path: string }> }
  kargs.files = kargs.files.filter(f => !f.path.startsWith('isolinux/'))
  chmodSync(kargsPath, 0o644)
  writeFileSync(kargsPath, JSON.stringify(kargs))
  const iso = `${dir}/rhcos-ppc64le.iso`
  run('xorriso', ['-as', 'mkisofs', '-R', '-J', '-V', `rhcos-${VERSION}`, '--protective-msdos-label', '-hfsplus', '-apm-block-size', '2048', '-o', iso, `${dir}/tree`])
  const source = readFileSync(iso)

  const upstream = await startFakeAssisted(t, { [ID]: { ignition: IGNITION } })
  const { app, logs } = await build(t, {
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.17', cpu_architecture: 'ppc64le', url: `file://${iso}`, version: VERSION }]),
    ASSISTED_SERVICE_HOST: upstream.host,
    MAX_EVENT_LOOP_DELAY_MS: '0',
    IMAGE_SERVICE_BASE_URL: 'https://images.example'
  })
  await app.ready()
  await app.imageStore.settled()
  const health = await app.inject('/health')
  t.equal(health.statusCode, 200, 'the image is ready', { body: health.body, logs: logs.text.slice(-2000) })

  const full = await app.inject(`/byid/${ID}/${VERSION}/ppc64le/full.iso`)
  t.equal(full.statusCode, 200)
  t.ok(full.rawPayload.subarray(0, 32768).equals(source.subarray(0, 32768)), 'the full ISO keeps its system area byte for byte')

  const minimal = await app.inject(`/byid/${ID}/${VERSION}/ppc64le/minimal.iso`)
  t.equal(minimal.statusCode, 200)
  const path = `${dir}/minimal.iso`
  writeFileSync(path, minimal.rawPayload)
  const image = await IsoImage.open(path)
  t.teardown(() => image.close())
  const label = image.systemArea.mbr!.partitions
  t.same(label.map(p => [p.type, p.startLba, p.startLba + p.sectors]), [[0xcd, 1, minimal.rawPayload.length / 512]], 'the minimal ISO: the label from sector 1 to its own end')
  t.notOk(image.lookup('/images/pxeboot/rootfs.img'), 'no rootfs')
  const areas = await findEmbedAreas(isoImageView(image))
  t.same(initrdFiles(minimal.rawPayload.subarray(areas.ignition!.offset, areas.ignition!.offset + areas.ignition!.length)).get('config.ign'), IGNITION, 'Ignition in its embed area')
  const grub = (await image.readFile(image.lookup('/EFI/redhat/grub.cfg')!)).toString('latin1')
  t.match(grub, `coreos.live.rootfs_url="https://images.example/boot-artifacts/rootfs?arch=ppc64le&version=${VERSION}"`, 'kargs.json still points at the kargs area')
})
