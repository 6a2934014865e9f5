// Opt-in (skips without qemu-system-arm, AAVMF and the arm64 kit; .ci/run installs them): an EFI-only aarch64
// live ISO is served and boots under AAVMF, read over HTTP as a BMC mounts it, and PXE-boots from the served files.
import t from 'tap'
import { createHash } from 'node:crypto'
import { aarch64Iso, archBootSkip, bootArch, serveArch, SERVED_ID, SERVED_VERSION } from '../fixtures/arch-boot.ts'

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

t.test('aarch64: full.iso and minimal.iso over HTTP under AAVMF, and a PXE boot', { skip: archBootSkip('aarch64', { http: true }) }, async t => {
  const dir = t.testdir()
  const iso = await aarch64Iso(dir, `rhcos-${SERVED_VERSION}`)
  const served = await serveArch(t, dir, 'aarch64', iso, ['console=ttyAMA0', 'ais.test=aarch64'])
  t.ok(served.fastify.imageStore.allReady(), 'the aarch64 image is ready')
  const { ignition, network, networkPath, nmstatectl } = served.expected

  for (const file of ['full.iso', 'minimal.iso']) {
    const started = Date.now()
    const console = await bootArch('aarch64', { dir, cdrom: served.iso(file) })
    t.comment(`${file}: booted in ${Math.round((Date.now() - started) / 1000)} s`)
    t.match(console, /AIS-CMDLINE: .*ignition\.platform\.id=metal.* console=ttyAMA0 ais\.test=aarch64/, `${file}: kargs from the embed area`)
    t.match(console, `AIS-IGNITION: ${sha(ignition)}`, `${file}: the infra-env's Ignition`)
    if (file === 'minimal.iso') {
      t.match(console, `coreos.live.rootfs_url=${served.url}/boot-artifacts/rootfs?arch=aarch64&version=${SERVED_VERSION} `, 'minimal.iso: the rootfs URL')
      t.notMatch(console, /coreos\.liveiso=/, 'minimal.iso: no liveiso karg')
      t.match(console, `AIS-RAMDISK: ${networkPath} ${sha(network)}`, 'minimal.iso: the ramdisk')
      t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl}`, 'minimal.iso: nmstatectl from the rootfs')
    }
  }
  const ranges = served.logs.records().filter(r => r.route === '/byid/:imageId/:version/:arch/:filename' && r.status === 206).length
  t.ok(ranges > 10, `the ISOs were read with Range requests (${ranges})`)

  const kernel = await served.download(`/boot-artifacts/kernel?arch=aarch64&version=${SERVED_VERSION}`, 'vmlinuz')
  const initrd = await served.download(`/images/${SERVED_ID}/pxe-initrd?arch=aarch64&version=${SERVED_VERSION}`, 'initrd.img')
  const started = Date.now()
  const console = await bootArch('aarch64', { dir, kernel, initrd, append: 'console=ttyAMA0 ais.test=pxe' })
  t.comment(`PXE: booted in ${Math.round((Date.now() - started) / 1000)} s`)
  t.match(console, 'AIS-CMDLINE: console=ttyAMA0 ais.test=pxe')
  t.match(console, `AIS-IGNITION: ${sha(ignition)}`, 'PXE: Ignition appended to the initrd')
  t.match(console, `AIS-RAMDISK: ${networkPath} ${sha(network)}`, 'PXE: ramdisk appended')
  t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl}`, 'PXE: nmstatectl, mode 0755')
})
