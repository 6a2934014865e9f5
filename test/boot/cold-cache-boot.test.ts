// Opt-in, like served-boot: QEMU boots the ISOs over HTTP the way BMC virtual media does, and PXE-boots, while the
// service reads the OS image from a real nginx origin on demand (OS_IMAGES_FETCH=on-demand), its cache cold.
import t from 'tap'
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { bootableIso, bootQemu, bootSkip } from '../fixtures/boot-kit.ts'
import { startNginxOrigin } from '../fixtures/nginx-origin.ts'
import { missingTools } from '../fixtures/tools.ts'
import { listen } from '../helper.ts'

const skip = bootSkip() || missingTools('nginx') ||
  (missingTools('/usr/lib/x86_64-linux-gnu/qemu/block-curl.so') === false ? false : 'needs QEMU\'s HTTP block driver (apt-get install qemu-block-extra)')
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const VERSION = '9.6.20250601-0'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"},"cold":true}')

t.test('a cold cache: BMC-style HTTP mounts of full.iso and minimal.iso and a PXE boot, the image read from its origin', { skip }, async t => {
  const dir = t.testdir()
  const iso = await bootableIso(dir, `rhcos-${VERSION}`)
  mkdirSync(`${dir}/www`)
  copyFileSync(iso, `${dir}/www/rhcos.iso`)
  const origin = await startNginxOrigin(t, { root: `${dir}/www` })
  mkdirSync(`${dir}/envs/${ID}`, { recursive: true })
  writeFileSync(`${dir}/envs/${ID}/discovery.ign`, IGNITION)
  writeFileSync(`${dir}/envs/${ID}/infra-env.json`, JSON.stringify({ kernel_arguments: JSON.stringify([{ operation: 'append', value: 'console=ttyS0' }]) }))
  const { url, fastify } = await listen(t, {
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.19', cpu_architecture: 'x86_64', url: `${origin.url}/rhcos.iso`, version: VERSION }]),
    INFRAENVS_DIR: `${dir}/envs`,
    DATA_DIR: `${dir}/data`,
    OS_IMAGES_FETCH: 'on-demand'
  })
  await fastify.imageStore.settled()
  t.ok(fastify.imageStore.allReady(), 'ready before the image is fetched')
  const size = statSync(iso).size
  const fetched = () => origin.accessLog().filter(r => r.status === 206).reduce((n, r) => n + r.bytes, 0)
  t.ok(fetched() < size / 2, `preparation fetched ${fetched()} of ${size} bytes`)

  for (const file of ['minimal.iso', 'full.iso']) {
    const console = await bootQemu({ cdromUrl: `${url}/byid/${ID}/${VERSION}/x86_64/${file}`, dir })
    t.match(console, `AIS-IGNITION: ${sha(IGNITION)}`, `${file} from a cold cache: Ignition`)
    t.match(console, /AIS-CMDLINE: .* console=ttyS0/, `${file} from a cold cache: kargs`)
  }
  const kernel = Buffer.from(await (await fetch(`${url}/boot-artifacts/kernel?version=${VERSION}`)).arrayBuffer())
  const initrd = Buffer.from(await (await fetch(`${url}/images/${ID}/pxe-initrd?version=${VERSION}`)).arrayBuffer())
  writeFileSync(join(dir, 'vmlinuz'), kernel)
  writeFileSync(join(dir, 'initrd.img'), initrd)
  const console = await bootQemu({ kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), append: 'console=ttyS0 ais.test=pxe', dir })
  t.match(console, `AIS-IGNITION: ${sha(IGNITION)}`, 'PXE from a cold cache: Ignition appended to the initrd')
  t.notOk(origin.accessLog().some(r => r.method === 'GET' && r.status === 200), 'the origin was only ever read by ranges')
})
