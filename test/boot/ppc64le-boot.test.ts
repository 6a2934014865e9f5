// Opt-in (skips without qemu-system-ppc64 and the ppc64el kit; .ci/run installs them): a grub-mkrescue ppc64le
// live ISO (protective MBR from sector 1, HFS+/APM, CHRP) is served, and its full and minimal ISOs boot under
// SLOF read over HTTP; the minimal one with the rootfs URL and the custom initrds in /boot/grub/grub.cfg.
import t from 'tap'
import { createHash } from 'node:crypto'
import { archBootSkip, bootArch, ppc64leIso, serveArch, SERVED_ID, SERVED_VERSION } from '../fixtures/arch-boot.ts'

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

t.test('ppc64le: full.iso and minimal.iso over HTTP under SLOF, and a PXE boot', { skip: archBootSkip('ppc64le', { http: true }) }, async t => {
  const dir = t.testdir()
  const iso = ppc64leIso(dir, `rhcos-${SERVED_VERSION}`)
  const served = await serveArch(t, dir, 'ppc64le', iso, ['console=hvc0', 'ais.test=ppc64le'])
  t.ok(served.fastify.imageStore.allReady(), 'the grub-mkrescue image is ready', { health: await (await fetch(`${served.url}/health`)).text() })
  const { ignition, network, networkPath, nmstatectl } = served.expected

  for (const file of ['full.iso', 'minimal.iso']) {
    const mbr = Buffer.from(await (await fetch(served.iso(file), { headers: { range: 'bytes=0-511' } })).arrayBuffer())
    t.same([mbr[446 + 4], mbr.readUInt32LE(446 + 8)], [0xcd, 1], `${file}: grub-mkrescue's protective MBR entry (type 0xcd from sector 1) is kept`)
    const started = Date.now()
    const console = await bootArch('ppc64le', { dir, cdrom: served.iso(file) })
    t.comment(`${file}: booted in ${Math.round((Date.now() - started) / 1000)} s`)
    t.match(console, /AIS-CMDLINE: .*ignition\.platform\.id=metal.* console=hvc0 ais\.test=ppc64le/, `${file}: kargs from the embed area`)
    t.match(console, `AIS-IGNITION: ${sha(ignition)}`, `${file}: the infra-env's Ignition`)
    if (file === 'minimal.iso') {
      t.match(console, `coreos.live.rootfs_url=${served.url}/boot-artifacts/rootfs?arch=ppc64le&version=${SERVED_VERSION} `, 'minimal.iso: the rootfs URL')
      t.notMatch(console, /coreos\.liveiso=/, 'minimal.iso: no liveiso karg')
      t.match(console, `AIS-RAMDISK: ${networkPath} ${sha(network)}`, 'minimal.iso: the ramdisk')
      t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl}`, 'minimal.iso: nmstatectl from the rootfs')
    }
  }

  const kernel = await served.download(`/boot-artifacts/kernel?arch=ppc64le&version=${SERVED_VERSION}`, 'vmlinux')
  const initrd = await served.download(`/images/${SERVED_ID}/pxe-initrd?arch=ppc64le&version=${SERVED_VERSION}`, 'initrd.img')
  const started = Date.now()
  const console = await bootArch('ppc64le', { dir, kernel, initrd, append: 'console=hvc0 ais.test=pxe' })
  t.comment(`PXE: booted in ${Math.round((Date.now() - started) / 1000)} s`)
  t.match(console, 'AIS-CMDLINE: console=hvc0 ais.test=pxe', 'PXE: the kargs given')
  t.match(console, `AIS-IGNITION: ${sha(ignition)}`, 'PXE: Ignition appended to the initrd')
  t.match(console, `AIS-RAMDISK: ${networkPath} ${sha(network)}`, 'PXE: ramdisk appended')
  t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl}`, 'PXE: nmstatectl, mode 0755')
})
