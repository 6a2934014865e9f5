import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { initrdFiles, readInitrd } from '../fixtures/initrd-reader.ts'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'
import { NMSTATECTL_PATH, writeRootfsTree } from '../fixtures/rootfs-tree.ts'

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')
const STATIC = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b01'
const DHCP = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b02'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const RAMDISK = filesArchive([{ name: 'etc/assisted/network/host.nmconnection', mode: 0o100600, data: Buffer.from('[connection]\n') }])
const infraEnvs = { [STATIC]: { ignition: IGNITION, ramdisk: RAMDISK }, [DHCP]: { ignition: IGNITION } }
const expected = writeRootfsTree(join(t.testdir(), 'tree')).find(e => e.path === NMSTATECTL_PATH)!

t.test('OpenShift 4.19 with static networking: the PXE initrd and the minimal ISO carry nmstatectl', async t => {
  const isos = await routeIsos(t.testdir())
  const { app } = await startService(t, { isos, infraEnvs, openshiftVersion: '4.19.0' })
  const pxe = await app.inject(`/images/${STATIC}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`)
  t.equal(pxe.statusCode, 200)
  const member = readInitrd(pxe.rawPayload).find(e => e.name === 'usr/bin/nmstatectl')
  t.equal(member?.mode, 0o100755, 'usr/bin/nmstatectl, mode 0755')
  t.equal(sha256(member!.data), expected.sha256, 'the bytes of the deployment\'s nmstatectl')
  t.ok(initrdFiles(pxe.rawPayload).has('etc/assisted/network/host.nmconnection'), 'next to the ramdisk')

  const minimal = await app.inject(`/byid/${STATIC}/${X86_VERSION}/x86_64/minimal.iso`)
  t.equal(minimal.statusCode, 200)
  const path = join(t.testdir(), 'minimal.iso')
  writeFileSync(path, minimal.rawPayload)
  const iso = await IsoImage.open(path)
  t.teardown(() => iso.close())
  t.equal(sha256(initrdFiles(await iso.readFile(iso.lookup('/images/nmstate.img')!)).get('usr/bin/nmstatectl')!), expected.sha256, 'the minimal ISO too')

  const dhcp = await app.inject(`/images/${DHCP}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`)
  t.notOk(initrdFiles(dhcp.rawPayload).has('usr/bin/nmstatectl'), 'no ramdisk, no nmstate archive')

  const health = await app.inject('/health')
  t.same(health.json(), { status: 'ready' }, 'nothing degraded')
  t.match((await app.inject('/metrics')).body, `assisted_image_service_nmstatectl_missing{version="${X86_VERSION}",arch="x86_64"} 0`)
})

t.test('no nmstatectl in the image: requests that need it fail clearly, everything else serves', async t => {
  const dir = t.testdir()
  mkdirSync(join(dir, 'x86'))
  // A placeholder rootfs (a squashfs magic and nothing else): extraction fails.
  const x86 = await buildSyntheticIso({ dir: join(dir, 'x86'), volumeId: `rhcos-${X86_VERSION}` })
  const { app, logs } = await startService(t, { isos: { x86 }, infraEnvs, openshiftVersion: '4.19.0' })
  t.ok(app.imageStore.allReady())

  for (const url of [`/byid/${STATIC}/${X86_VERSION}/x86_64/minimal.iso`, `/images/${STATIC}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`]) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 500, `${url}: a 5xx, never an image without nmstatectl`)
    t.equal(res.json().code, 'IMG_NMSTATE_UNAVAILABLE')
    t.match(res.json().message, new RegExp(`OS image ${X86_VERSION}@x86_64@full-iso has no nmstatectl, which static networking on OpenShift 4.19.0 needs: .*squashfs`))
  }
  t.equal((await app.inject(`/byid/${STATIC}/${X86_VERSION}/x86_64/full.iso`)).statusCode, 200, 'full ISO: the ramdisk is not part of it')
  t.equal((await app.inject(`/byid/${DHCP}/${X86_VERSION}/x86_64/minimal.iso`)).statusCode, 200, 'minimal ISO without static networking')
  const dhcpPxe = await app.inject(`/images/${DHCP}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`)
  t.equal(dhcpPxe.statusCode, 200, 'PXE without static networking')
  t.notOk(initrdFiles(dhcpPxe.rawPayload).has('usr/bin/nmstatectl'))
  t.equal((await app.inject(`/boot-artifacts/rootfs?version=${X86_VERSION}&arch=x86_64`)).statusCode, 200, 'boot artifacts')

  const health = await app.inject('/health')
  t.equal(health.statusCode, 200, '/health stays 200: the pod stays in rotation')
  t.match(health.json(), { status: 'ready', degraded: [{ image: `${X86_VERSION}@x86_64@full-iso`, reason: /^no nmstatectl for static networking: .*squashfs/ }] })
  t.match((await app.inject('/metrics')).body, `assisted_image_service_nmstatectl_missing{version="${X86_VERSION}",arch="x86_64"} 1`)
  const errors = logs.records().filter(r => Number(r.level) >= 50 && /nmstatectl/.test(String(r.msg)))
  t.equal(errors.length, 1, 'logged once, at error level')
})
