import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { initrdFiles } from '../fixtures/initrd-reader.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { findEmbedAreas } from '../../services/coreos/embed-areas.ts'
import { isoImageView } from '../../services/coreos/customize.ts'
import { jwt } from '../fixtures/fake-assisted.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const OTHER = '1c8e2b47-3f2d-4b9a-8e0c-2d4c6b8a0f1e'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core"}]}}')
const RAMDISK = filesArchive([{ name: 'etc/assisted/network.nmconnection', mode: 0o100600, data: Buffer.from('[connection]\nid=eth0\n') }])
const KARGS = JSON.stringify([{ operation: 'append', value: 'console=ttyS0' }, { operation: 'append', value: 'rd.neednet=1' }])

const isos = await routeIsos(t.testdir())

async function decodeIso (t: Test, bytes: Buffer) {
  const path = `${t.testdirName}-served.iso`
  writeFileSync(path, bytes)
  const image = await IsoImage.open(path)
  t.teardown(() => image.close())
  const areas = await findEmbedAreas(isoImageView(image))
  const ign = areas.ignition!
  return {
    image,
    areas,
    ignition: initrdFiles(bytes.subarray(ign.offset, ign.offset + ign.length)).get('config.ign'),
    file: async (path: string) => (await image.readFile(image.lookup(path)!)).toString('latin1')
  }
}

t.test('byid full.iso: Ignition and kargs embedded, headers, upstream calls', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION, kernelArguments: KARGS, lastModified: 'Sunday, 06-Nov-94 08:49:37 GMT' } } })
  const res = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-disposition'], `attachment; filename=${ID}-discovery.iso`)
  t.equal(res.headers['content-type'], 'application/octet-stream')
  t.equal(res.headers['accept-ranges'], 'bytes')
  t.equal(res.headers['last-modified'], 'Sun, 06 Nov 1994 08:49:37 GMT', 'upstream date re-emitted as IMF-fixdate')
  t.match(res.headers.etag, /^"[A-Za-z0-9_-]+"$/)
  const template = app.imageStore.get(`${X86_VERSION}@x86_64@full-iso`)!.templates['full-iso']!
  t.equal(Number(res.headers['content-length']), template.image.size)
  t.equal(res.rawPayload.length, template.image.size)
  const iso = await decodeIso(t, res.rawPayload)
  t.same(iso.ignition, IGNITION, 'Ignition decoded from the embed area')
  for (const path of ['/EFI/redhat/grub.cfg', '/isolinux/isolinux.cfg']) {
    t.match(await iso.file(path), /ignition\.platform\.id=metal console=ttyS0 rd\.neednet=1\n#+ COREOS_KARG_EMBED_AREA/, `kargs in ${path}`)
  }
  const paths = upstream.calls.map(c => `${c.path}?${c.query.toString()}`).sort()
  t.same(paths, [
    `/api/assisted-install/v2/infra-envs/${ID}/downloads/files?file_name=discovery.ign&discovery_iso_type=full-iso`,
    `/api/assisted-install/v2/infra-envs/${ID}?`
  ], 'ignition (with iso type) and infra-env; no minimal-initrd')

  const head = await app.inject({ method: 'HEAD', url: `/byid/${ID}/${X86_VERSION}/x86_64/full.iso` })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], res.headers['content-length'])
  t.equal(head.headers.etag, res.headers.etag, 'HEAD and GET agree on the ETag')
  t.equal(head.rawPayload.length, 0)
})

t.test('minimal.iso: ramdisk at the start of its area, rootfs URL in the kargs', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION, ramdisk: RAMDISK, kernelArguments: KARGS } }, env: { IMAGE_SERVICE_BASE_URL: 'https://images.example' } })
  const res = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`)
  t.equal(res.statusCode, 200)
  const iso = await decodeIso(t, res.rawPayload)
  t.same(iso.ignition, IGNITION)
  t.notOk(iso.image.lookup('/images/pxeboot/rootfs.img'))
  const ramdiskArea = iso.areas.ramdisk!
  t.ok(res.rawPayload.subarray(ramdiskArea.offset, ramdiskArea.offset + RAMDISK.length).equals(RAMDISK), 'ramdisk at the start of its area')
  t.ok(res.rawPayload.subarray(ramdiskArea.offset + RAMDISK.length, ramdiskArea.offset + ramdiskArea.length).every(b => b === 0), 'rest zero')
  t.match(await iso.file('/EFI/redhat/grub.cfg'), `coreos.live.rootfs_url="https://images.example/boot-artifacts/rootfs?arch=x86_64&version=${X86_VERSION}" console=ttyS0 rd.neednet=1\n`)
  t.ok(upstream.calls.some(c => c.path.endsWith('/downloads/minimal-initrd')))
  t.ok(upstream.calls.some(c => c.query.get('discovery_iso_type') === 'minimal-iso'))
})

t.test('bytoken, byapikey and the long form find the image and forward one credential', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION }, [OTHER]: { ignition: Buffer.from('{"other":1}') } } })
  const token = jwt({ sub: ID, exp: 4102444800 })
  let res = await app.inject({ url: `/bytoken/${token}/${X86_VERSION}/x86_64/full.iso?api_key=QUERYKEY`, headers: { authorization: 'Bearer AUTH', cookie: 'session=1', 'x-custom': 'no' } })
  t.equal(res.statusCode, 200)
  let calls = upstream.calls.splice(0)
  t.ok(calls.length >= 2)
  for (const call of calls) {
    t.equal(call.headers['image-token'], token, 'path token wins, as Image-Token')
    t.equal(call.query.get('api_key'), null, 'the api_key query does not beat the path token')
    t.equal(call.headers.authorization, undefined)
    t.equal(call.headers.cookie, undefined, 'no other client header is forwarded')
    t.equal(call.headers['x-custom'], undefined)
  }

  const apiKey = jwt({ infra_env_id: OTHER }, 'base64')
  res = await app.inject({ url: `/byapikey/${apiKey}/${X86_VERSION}/x86_64/full.iso`, headers: { authorization: 'Bearer AUTH' } })
  t.equal(res.statusCode, 200, 'standard base64 payload with infra_env_id')
  calls = upstream.calls.splice(0)
  t.ok(calls.every(c => c.path.includes(OTHER)))
  t.ok(calls.every(c => c.query.get('api_key') === apiKey && c.headers.authorization === undefined && c.headers['image-token'] === undefined), 'path API key as api_key query')

  res = await app.inject({ url: `/images/${ID}?version=${X86_VERSION}&type=full-iso&image_token=QT`, headers: { authorization: 'Bearer AUTH' } })
  t.equal(res.statusCode, 200, 'long form, arch defaults to x86_64')
  calls = upstream.calls.splice(0)
  t.ok(calls.every(c => c.headers['image-token'] === 'QT' && c.headers.authorization === undefined), 'image_token query beats Authorization')

  res = await app.inject({ url: `/byid/${ID}/${X86_VERSION}/x86_64/full.iso`, headers: { authorization: 'Bearer AUTH' } })
  calls = upstream.calls.splice(0)
  t.ok(calls.every(c => c.headers.authorization === 'Bearer AUTH'), 'Authorization verbatim when it is the only credential')

  for (const bad of ['not-a-jwt', 'a.!!!.c', jwt({ name: 'no id' })]) {
    res = await app.inject(`/bytoken/${bad}/${X86_VERSION}/x86_64/full.iso`)
    t.equal(res.statusCode, 404, `undecodable token ${bad.slice(0, 12)}: 404`)
  }
  t.equal(upstream.calls.length, 0, 'and no upstream call')
})

t.test('validation order and errors before any upstream call', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } } })
  const cases: Array<[string, number, RegExp?]> = [
    [`/byid/NOT-A-UUID/${X86_VERSION}/x86_64/full.iso`, 400],
    [`/byid/${ID.toUpperCase()}/${X86_VERSION}/x86_64/full.iso`, 400],
    [`/byid/${ID}/${X86_VERSION}/x86_64/other.iso`, 404, /unknown image file/],
    [`/byid/${ID}/9.9.9/x86_64/full.iso`, 404, /no OS image for version 9.9.9/],
    [`/byid/${ID}/${X86_VERSION}/aarch64/full.iso`, 404],
    [`/byid/${ID}/${X86_VERSION}/x86_64/disconnected.iso`, 404, /no disconnected-iso is configured/],
    [`/images/${ID}?type=full-iso`, 400, /version/],
    [`/images/${ID}?version=${X86_VERSION}`, 400, /type/],
    [`/images/${ID}?version=${X86_VERSION}&type=weird`, 400, /type must be one of/]
  ]
  for (const [url, status, reason] of cases) {
    const res = await app.inject(url)
    t.equal(res.statusCode, status, url)
    if (reason !== undefined) t.match(res.json().message, reason)
  }
  t.equal(upstream.calls.length, 0)
  const post = await app.inject({ method: 'POST', url: `/byid/${ID}/${X86_VERSION}/x86_64/full.iso` })
  t.equal(post.statusCode, 405)
  t.equal(post.headers.allow, 'GET, HEAD')
  t.equal((await app.inject({ method: 'DELETE', url: `/boot-artifacts/rootfs?version=${X86_VERSION}` })).headers.allow, 'GET, HEAD')
})

t.test('upstream statuses pass through; unreachable 502; slow 504; bad kargs 502', async t => {
  const { app } = await startService(t, {
    isos,
    infraEnvs: {
      '11111111-1111-4111-8111-111111111111': { status: 401 },
      '22222222-2222-4222-8222-222222222222': { status: 409 },
      '33333333-3333-4333-8333-333333333333': { status: 503 },
      '44444444-4444-4444-8444-444444444444': { delayMs: 2500 },
      '55555555-5555-4555-8555-555555555555': { ignition: IGNITION, kernelArguments: '[{"operation":"replace","value":"x"}]' },
      '66666666-6666-4666-8666-666666666666': { ignition: IGNITION, kernelArguments: 'not json' },
      '77777777-7777-4777-8777-777777777777': { drop: true }
    },
    env: { ASSISTED_SERVICE_TIMEOUT: '1' }
  })
  const get = (id: string) => app.inject(`/byid/${id}/${X86_VERSION}/x86_64/full.iso`)
  t.equal((await get('11111111-1111-4111-8111-111111111111')).statusCode, 401)
  t.equal((await get('22222222-2222-4222-8222-222222222222')).statusCode, 409)
  t.equal((await get('33333333-3333-4333-8333-333333333333')).statusCode, 503)
  t.equal((await get('99999999-9999-4999-8999-999999999999')).statusCode, 404, 'unknown infra-env: upstream 404')
  t.equal((await get('44444444-4444-4444-8444-444444444444')).statusCode, 504)
  const replace = await get('55555555-5555-4555-8555-555555555555')
  t.equal(replace.statusCode, 502)
  t.match(replace.json().message, /operation "replace" is not supported/)
  t.equal((await get('66666666-6666-4666-8666-666666666666')).statusCode, 502)
  t.equal((await get('77777777-7777-4777-8777-777777777777')).statusCode, 502, 'dropped connection: 502')
})

t.test('unreachable assisted-service: 502 with no internals in the body', async t => {
  const { app } = await startService(t, { isos, infraEnvs: {}, env: { ASSISTED_SERVICE_HOST: '127.0.0.1:1' } })
  const res = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(res.statusCode, 502)
  t.notMatch(res.body, /127\.0\.0\.1|ECONNREFUSED/)
})

t.test('content that does not fit: 500 naming the area and both sizes', async t => {
  const huge = Buffer.from(Array.from({ length: 40000 }, () => Math.random().toString(36)).join(''))
  const { app, logs } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: huge } } })
  const res = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(res.statusCode, 500)
  t.match(res.json(), { code: 'IMG_EMBED_AREA_TOO_SMALL', message: /Ignition content of \d+ bytes does not fit the 262144-byte embed area/ })
  t.ok(logs.records().some(r => r.level === 50 && /262144/.test(String(r.reason))), 'logged at error level')
})

t.test('an image that is not ready answers 503 with Retry-After', async t => {
  const { app } = await startService(t, { isos: { x86: `${t.testdirName}-missing.iso` }, infraEnvs: { [ID]: { ignition: IGNITION } } })
  const res = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(res.statusCode, 503)
  t.ok(Number(res.headers['retry-after']) > 0)
  t.equal((await app.inject(`/boot-artifacts/kernel?version=${X86_VERSION}`)).statusCode, 503)
  t.equal((await app.inject('/health')).statusCode, 503)
})
