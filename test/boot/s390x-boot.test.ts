// Opt-in (skips without qemu-system-s390x and the s390x kit; .ci/run installs them): the served s390x full ISO
// IPLs from its El Torito images/cdboot.img, read over HTTP, with the Ignition in cdboot.img's embed area; and
// the served kernel and initrd PXE-boot.
import t from 'tap'
import { createHash } from 'node:crypto'
import { archBootSkip, bootArch, s390xIso, serveArch, SERVED_ID, SERVED_VERSION } from '../fixtures/arch-boot.ts'

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

t.test('s390x: full.iso IPLs over HTTP, and a PXE boot', { skip: archBootSkip('s390x', { http: true }) }, async t => {
  const dir = t.testdir()
  const iso = await s390xIso(dir, `rhcos-${SERVED_VERSION}`)
  // No kargs: they cannot be changed in s390x ISOs (as upstream), and SCLP is the default console.
  const served = await serveArch(t, dir, 's390x', iso, [])
  t.ok(served.fastify.imageStore.allReady(), 'the s390x image is ready')
  const { ignition, network, networkPath, nmstatectl } = served.expected

  let started = Date.now()
  let console = await bootArch('s390x', { dir, cdrom: served.iso('full.iso') })
  t.comment(`full.iso: IPL and boot in ${Math.round((Date.now() - started) / 1000)} s`)
  t.match(console, `AIS-CMDLINE: rw coreos.liveiso=rhcos-${SERVED_VERSION} ignition.firstboot ignition.platform.id=metal`, 'full.iso: the command line in cdboot.img')
  t.match(console, `AIS-IGNITION: ${sha(ignition)}`, 'full.iso: the Ignition from cdboot.img\'s embed area')
  const ranges = served.logs.records().filter(r => r.route === '/byid/:imageId/:version/:arch/:filename' && r.status === 206).length
  t.ok(ranges > 0, `the ISO was read with Range requests (${ranges})`)

  const kernel = await served.download(`/boot-artifacts/kernel?arch=s390x&version=${SERVED_VERSION}`, 'vmlinuz')
  const initrd = await served.download(`/images/${SERVED_ID}/pxe-initrd?arch=s390x&version=${SERVED_VERSION}`, 'initrd.img')
  started = Date.now()
  console = await bootArch('s390x', { dir, kernel, initrd, append: 'ais.test=pxe' })
  t.comment(`PXE: booted in ${Math.round((Date.now() - started) / 1000)} s`)
  t.match(console, 'AIS-CMDLINE: ais.test=pxe', 'PXE: the kargs given')
  t.match(console, `AIS-IGNITION: ${sha(ignition)}`, 'PXE: Ignition appended to the initrd')
  t.match(console, `AIS-RAMDISK: ${networkPath} ${sha(network)}`, 'PXE: ramdisk appended')
  t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl}`, 'PXE: nmstatectl, mode 0755')
})
