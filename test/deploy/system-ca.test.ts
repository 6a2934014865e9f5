// The image sets NODE_USE_SYSTEM_CA=1: an OS image mirror whose CA is only in the system trust store (as a
// cluster-wide CA is injected on OpenShift) is trusted for downloads, an extra CA file
// (OS_IMAGE_DOWNLOAD_TRUSTED_CA_FILE) adds to that store rather than replacing it, and without the setting
// Node's bundled roots alone refuse the mirror.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { freePort } from '../helper.ts'
import { startMirror } from '../fixtures/mirror.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'
import { missingTools } from '../fixtures/tools.ts'

const VERSION = '418.94.202501221327-0'

function openssl (...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' })
}

function makeCa (dir: string, name: string): void {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', `${dir}/${name}.key`, '-out', `${dir}/${name}.pem`)
}

t.test('an OS image over HTTPS from a mirror whose CA is only in the system trust store', { skip: missingTools('openssl') }, async t => {
  const dir = t.testdir({ iso: {}, 'infra-envs': {}, system: { certs: {} } })
  makeCa(dir, 'mirror-ca')
  makeCa(dir, 'other-ca')
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', `${dir}/mirror.key`, '-out', `${dir}/mirror.csr`)
  openssl('x509', '-req', '-in', `${dir}/mirror.csr`, '-CA', `${dir}/mirror-ca.pem`, '-CAkey', `${dir}/mirror-ca.key`,
    '-CAcreateserial', '-days', '1', '-copy_extensions', 'copyall', '-out', `${dir}/mirror.pem`)
  // The "system" store a child process sees: OpenSSL's SSL_CERT_FILE and SSL_CERT_DIR, holding the mirror's CA only.
  writeFileSync(`${dir}/system/ca-certificates.crt`, readFileSync(`${dir}/mirror-ca.pem`))
  const systemStore = { SSL_CERT_FILE: `${dir}/system/ca-certificates.crt`, SSL_CERT_DIR: `${dir}/system/certs` }

  const iso = await buildSyntheticIso({ dir: `${dir}/iso`, volumeId: `rhcos-${VERSION}` })
  const mirror = await startMirror(t, { '/rhcos.iso': { path: iso } }, { cert: readFileSync(`${dir}/mirror.pem`, 'utf8'), key: readFileSync(`${dir}/mirror.key`, 'utf8') })
  const osImages = JSON.stringify([{ openshift_version: '4.18', cpu_architecture: 'x86_64', url: `${mirror.url}/rhcos.iso`, version: VERSION }])

  const start = async (name: string, env: Record<string, string>) => {
    mkdirSync(`${dir}/${name}`)
    return startServerProcess(t, await freePort(), { ...systemStore, ...env, WORKERS: '1', LOG_LEVEL: 'info', OS_IMAGES: osImages, INFRAENVS_DIR: `${dir}/infra-envs`, DATA_DIR: `${dir}/${name}` }, dir)
  }

  await t.test('with NODE_USE_SYSTEM_CA=1 (as the image runs it) the image becomes ready', async t => {
    const server = await start('with-system-ca', { NODE_USE_SYSTEM_CA: '1' })
    t.equal(await untilHealthy(server), 200, 'ready', { output: server.output().slice(-2000) })
    t.equal((await fetch(`${server.base}/boot-artifacts/kernel?version=${VERSION}&arch=x86_64`, { method: 'HEAD' })).status, 200, 'and serves')
  })

  await t.test('an extra CA file for downloads adds to the system store', async t => {
    const server = await start('with-extra-ca', { NODE_USE_SYSTEM_CA: '1', OS_IMAGE_DOWNLOAD_TRUSTED_CA_FILE: `${dir}/other-ca.pem` })
    t.equal(await untilHealthy(server), 200, 'ready', { output: server.output().slice(-2000) })
  })

  await t.test('without it, Node\'s bundled roots refuse the mirror\'s certificate', async t => {
    const server = await start('without', {})
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline && !/retrying|will retry/.test(server.output())) await new Promise(resolve => setTimeout(resolve, 50))
    // The first request to the mirror (the probe of OS_IMAGES_FETCH=lazy for its Range support) meets the certificate.
    t.match(server.output(), /"error":"[^"]*unable to verify the first certificate[^"]*","retryInMs":\d+,"msg":"OS image not ready, will retry"/, 'a certificate error')
    t.equal((await fetch(`${server.base}/health`)).status, 503, 'not ready')
  })
})
