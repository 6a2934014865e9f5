import t from 'tap'
import { initrdFiles } from '../fixtures/initrd-reader.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { decDateTime } from '../../services/iso9660/dates.ts'
import { routeIsos, S390X_VERSION, startService, X86_VERSION } from '../fixtures/service.ts'

const ID = 'host-42'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"},"pxe":true}')
const RAMDISK = filesArchive([{ name: 'etc/static-network', mode: 0o100644, data: Buffer.from('ip=dhcp') }])

const isos = await routeIsos(t.testdir(), true)

t.test('pxe-initrd: initrd.img, then aligned Ignition and ramdisk archives', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION, ramdisk: RAMDISK } } })
  const res = await app.inject(`/images/${ID}/pxe-initrd?version=${X86_VERSION}&arch=x86_64&api_key=K`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-disposition'], `attachment; filename=${ID}-initrd.img`)
  const iso = await IsoImage.open(isos.x86)
  t.teardown(() => iso.close())
  const initrd = await iso.readFile(iso.lookup('/images/pxeboot/initrd.img')!)
  t.ok(res.rawPayload.subarray(0, initrd.length).equals(initrd), 'starts with the ISO initrd')
  const files = initrdFiles(res.rawPayload)
  t.same(files.get('config.ign'), IGNITION, 'Ignition decoded with the cpio reader')
  t.equal(files.get('etc/static-network')?.toString(), 'ip=dhcp')
  t.same(upstream.calls.map(c => c.path.replace(/.*infra-envs\/[^/]+/, '')).sort(), ['/downloads/files', '/downloads/minimal-initrd'], 'no infra-env call')
  t.ok(upstream.calls.every(c => !c.query.has('discovery_iso_type')), 'ignition without iso type')
  t.ok(upstream.calls.every(c => c.query.get('api_key') === 'K'))
  t.equal((await app.inject(`/images/${ID}/pxe-initrd?arch=x86_64`)).statusCode, 400, 'version missing')
  t.equal((await app.inject(`/images/${ID}/pxe-initrd?version=9.9`)).statusCode, 400, 'unknown version is 400 here')
})

t.test('boot artifacts: exact bytes, cacheable, no upstream', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: {} })
  const iso = await IsoImage.open(isos.x86)
  t.teardown(() => iso.close())
  const res = await app.inject(`/boot-artifacts/kernel?version=${X86_VERSION}&arch=x86_64`)
  t.equal(res.statusCode, 200)
  t.ok(res.rawPayload.equals(await iso.readFile(iso.lookup('/images/pxeboot/vmlinuz')!)))
  t.equal(res.headers['content-disposition'], 'attachment; filename=vmlinuz')
  t.equal(res.headers['cache-control'], 'public, max-age=86400')
  t.equal(res.headers['last-modified'], decDateTime(iso.primary.created)!.toUTCString(), 'the ISO\'s own creation date, not the file\'s mtime')
  const rootfs = await app.inject({ method: 'HEAD', url: `/boot-artifacts/rootfs?version=${X86_VERSION}` })
  t.equal(Number(rootfs.headers['content-length']), iso.lookup('/images/pxeboot/rootfs.img')!.size)
  t.equal(rootfs.headers['content-disposition'], 'attachment; filename=rootfs.img')
  t.equal((await app.inject('/boot-artifacts/kernel')).statusCode, 400, 'version missing')
  t.equal((await app.inject('/boot-artifacts/kernel?version=nope')).statusCode, 400, 'unknown version')
  t.equal((await app.inject(`/boot-artifacts/initrd?version=${X86_VERSION}`)).statusCode, 404)
  t.equal((await app.inject(`/boot-artifacts/ins-file?version=${X86_VERSION}`)).statusCode, 404, 'ins-file is s390x only')
  t.equal(upstream.calls.length, 0)
})

t.test('s390x: addrsize carries the PXE initrd length; kargs go into cdboot.img', async t => {
  const { app } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION, ramdisk: RAMDISK, kernelArguments: '[{"operation":"append","value":"rd.zdev=dasd"}]' } } })
  const addrsize = await app.inject(`/images/${ID}/s390x-initrd-addrsize?version=${S390X_VERSION}&arch=x86_64`)
  t.equal(addrsize.statusCode, 200)
  t.equal(addrsize.rawPayload.length, 16)
  t.equal(addrsize.headers['content-disposition'], `attachment; filename=${ID}-initrd.addrsize`)
  const initrd = await app.inject(`/images/${ID}/pxe-initrd?version=${S390X_VERSION}&arch=s390x`)
  t.equal(addrsize.rawPayload.readBigUInt64BE(8), BigInt(initrd.rawPayload.length), 'bytes 8-15: the PXE initrd length')
  t.same([...addrsize.rawPayload.subarray(0, 8)], [0, 0, 0, 0, 2, 0, 0, 0], 'bytes 0-7 from the ISO')
  t.equal((await app.inject(`/images/${ID}/s390x-initrd-addrsize`)).statusCode, 400)

  const full = await app.inject(`/images/${ID}?version=${S390X_VERSION}&type=full-iso&arch=s390x`)
  t.equal(full.statusCode, 200)
  t.match(full.rawPayload.toString('latin1'), /ignition\.platform\.id=metal rd\.zdev=dasd\0/, 'kargs embedded in cdboot.img')
  t.equal((await app.inject(`/images/${ID}?version=${S390X_VERSION}&type=minimal-iso&arch=s390x`)).statusCode, 404, 'no minimal ISO for s390x')
  const ins = await app.inject(`/boot-artifacts/ins-file?version=${S390X_VERSION}&arch=s390x`)
  t.equal(ins.statusCode, 200)
  t.equal(ins.headers['content-disposition'], 'attachment; filename=generic.ins')
})
