// Opt-in: QEMU mounts the served ISO over HTTP the way BMC virtual media does (HEAD + Range
// requests), and PXE-boots from the served kernel and initrd.
import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { bootableIso, bootQemu, bootSkip } from '../fixtures/boot-kit.ts'
import { missingTools } from '../fixtures/tools.ts'
import { listen } from '../helper.ts'
import { NMSTATECTL_PATH, writeRootfsTree } from '../fixtures/rootfs-tree.ts'

const skip = bootSkip() || (missingTools('/usr/lib/x86_64-linux-gnu/qemu/block-curl.so') === false ? false : 'needs QEMU\'s HTTP block driver (apt-get install qemu-block-extra)')
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const VERSION = '9.6.20250601-0'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"},"served":true}')
const NETWORK = Buffer.from('[connection]\nid=served\n')

t.test('BMC-style HTTP mount of full.iso and minimal.iso, and a PXE boot', { skip }, async t => {
  const dir = t.testdir()
  const iso = await bootableIso(dir, `rhcos-${VERSION}`)
  mkdirSync(`${dir}/envs/${ID}`, { recursive: true })
  writeFileSync(`${dir}/envs/${ID}/discovery.ign`, IGNITION)
  writeFileSync(`${dir}/envs/${ID}/minimal-initrd.img`, filesArchive([{ name: 'etc/assisted/served.nmconnection', mode: 0o100600, data: NETWORK }]))
  writeFileSync(`${dir}/envs/${ID}/infra-env.json`, JSON.stringify({ kernel_arguments: JSON.stringify([{ operation: 'append', value: 'console=ttyS0' }]) }))
  const { url, fastify, logs } = await listen(t, {
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.19', cpu_architecture: 'x86_64', url: `file://${iso}`, version: VERSION }]),
    INFRAENVS_DIR: `${dir}/envs`
  })
  await fastify.imageStore.settled()
  t.ok(fastify.imageStore.allReady())
  const nmstatectl = writeRootfsTree(`${dir}/tree`).find(e => e.path === NMSTATECTL_PATH)!

  for (const file of ['full.iso', 'minimal.iso']) {
    const console = await bootQemu({ cdromUrl: `${url}/byid/${ID}/${VERSION}/x86_64/${file}`, dir })
    t.match(console, `AIS-IGNITION: ${sha(IGNITION)}`, `${file} over HTTP: Ignition`)
    t.match(console, /AIS-CMDLINE: .* console=ttyS0/, `${file} over HTTP: kargs`)
    if (file === 'minimal.iso') {
      t.match(console, `AIS-RAMDISK: /etc/assisted/served.nmconnection ${sha(NETWORK)}`)
      t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl.sha256}`, 'minimal.iso: the guest sees nmstatectl from the rootfs\'s ostree deployment')
    }
  }
  const ranges = logs.records().filter(r => r.route === '/byid/:imageId/:version/:arch/:filename' && r.status === 206).length
  t.ok(ranges > 10, `the ISOs were read with Range requests (${ranges})`)

  const kernel = Buffer.from(await (await fetch(`${url}/boot-artifacts/kernel?version=${VERSION}`)).arrayBuffer())
  const initrd = Buffer.from(await (await fetch(`${url}/images/${ID}/pxe-initrd?version=${VERSION}`)).arrayBuffer())
  writeFileSync(`${dir}/vmlinuz`, kernel)
  writeFileSync(`${dir}/initrd.img`, initrd)
  const console = await bootQemu({ kernel: `${dir}/vmlinuz`, initrd: `${dir}/initrd.img`, append: 'console=ttyS0 ais.test=pxe', dir })
  t.match(console, 'AIS-CMDLINE: console=ttyS0 ais.test=pxe')
  t.match(console, `AIS-IGNITION: ${sha(IGNITION)}`, 'PXE: Ignition appended to the initrd')
  t.match(console, `AIS-RAMDISK: /etc/assisted/served.nmconnection ${sha(NETWORK)}`, 'PXE: ramdisk appended')
  t.match(console, `AIS-NMSTATECTL: 755 ${nmstatectl.sha256}`, 'PXE: the guest sees nmstatectl, mode 0755')
})
