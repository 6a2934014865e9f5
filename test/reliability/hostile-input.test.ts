// Tried as an attacker would: every request gets a complete answer, never a 5xx of our own making, never
// a secret in a log line or a body. Real HTTP on 127.0.0.1; loops bounded in count and time.
import t, { type Test } from 'tap'
import net from 'node:net'
import { contentDisposition } from '../../services/http/content-disposition.ts'
import { redactUrl } from '../../services/observe/redact.ts'
import { jwt } from '../fixtures/fake-assisted.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const isos = await routeIsos(t.testdir())
const iso = (first: string, file = 'full.iso') => `/${first}/${X86_VERSION}/x86_64/${file}`

/**
 * One raw HTTP/1.1 exchange, so nothing (fetch, URL parsing) normalises what we send. The body is read
 * when it is small; a large one (a whole ISO) is not needed: the answer is complete once its head is.
 */
function raw (port: number, request: string, timeoutMs = 10_000): Promise<{ status: number, head: string, body: string, ms: number }> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let received = Buffer.alloc(0)
    let settled = false
    const finish = (): void => {
      if (settled) return
      const text = received.toString('latin1')
      const end = text.indexOf('\r\n\r\n')
      const head = end === -1 ? text : text.slice(0, end)
      const body = end === -1 ? '' : text.slice(end + 4)
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
      settled = true
      clearTimeout(timer)
      socket.destroy()
      if (status === 0) reject(new Error(`no status line for ${JSON.stringify(request.slice(0, 120))}: ${JSON.stringify(text.slice(0, 200))}`))
      else resolve({ status, head, body, ms: Date.now() - started })
    }
    const timer = setTimeout(() => { if (!settled) { settled = true; socket.destroy(); reject(new Error(`no complete answer in ${timeoutMs} ms to ${JSON.stringify(request.slice(0, 120))}`)) } }, timeoutMs)
    socket.on('data', d => {
      received = Buffer.concat([received, d])
      const text = received.toString('latin1')
      const end = text.indexOf('\r\n\r\n')
      if (end === -1) return
      const length = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end))?.[1]
      if (length === undefined || Number(length) > 65_536 || received.length >= end + 4 + Number(length)) finish()
    })
    socket.on('error', () => {})
    socket.on('close', finish)
    socket.write(request.includes('\r\n\r\n') ? request : `${request}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
  })
}

const get = (path: string, method = 'GET', headers = ''): string => `${method} ${path} HTTP/1.1${headers !== '' ? `\r\n${headers}` : ''}`

/** Hostile ids the fake assisted-service knows too, so only our own checks can stop them. */
const HOSTILE = ['a\r\nb', 'a\nSet-Cookie: x=1', 'nul\0byte', 'del\x7f', 'wide\u0100', 'emoji\u{1F600}', ' leading-space', 'a'.repeat(129), 'x; filename=evil.exe; x']

async function service (t: Test) {
  const infraEnvs = Object.fromEntries([ID, ...HOSTILE].map(id => [id, { ignition: IGNITION }]))
  const started = await startService(t, { isos, infraEnvs, listen: true, env: { MAX_CONCURRENT_REQUESTS: '8', REQUEST_QUEUE_TIMEOUT: '5' } })
  return { ...started, port: Number(new URL(started.url!).port) }
}

t.test('row 1: a token whose sub holds CR, LF, NUL, DEL or wide characters gets a complete 404, and the slot comes back', async t => {
  const { port, upstream } = await service(t)
  for (const sub of HOSTILE.slice(0, 8)) {
    for (const method of ['GET', 'HEAD']) {
      const res = await raw(port, get(`/bytoken/${jwt({ sub })}${iso('').slice(1)}`.replace('//', '/'), method))
      t.equal(res.status, 404, `${method} sub=${JSON.stringify(sub.slice(0, 20))}: 404`)
      if (method === 'GET') t.match(res.body, /"code":"IMG_BAD_TOKEN"/)
    }
  }
  t.equal(upstream.calls.length, 0, 'nothing reached assisted-service')
  // More requests than slots: every one is answered, so none was left holding its slot.
  const again = await Promise.all(Array.from({ length: 12 }, () => raw(port, get(`/byid/${ID}${iso('').slice(1)}`.replace('//', '/'), 'HEAD'))))
  t.same([...new Set(again.map(r => r.status))], [200])
})

t.test('row 2: Content-Disposition cannot be injected through the token', async t => {
  const { port } = await service(t)
  const res = await raw(port, get(`/bytoken/${jwt({ sub: 'x; filename=evil.exe; x' })}/${X86_VERSION}/x86_64/full.iso`, 'HEAD'))
  t.equal(res.status, 404)
  t.notMatch(res.head, /evil/)
  t.equal(contentDisposition('host-1-discovery.iso'), 'attachment; filename=host-1-discovery.iso')
  t.equal(contentDisposition('a "b"; c.iso'), 'attachment; filename="a \\"b\\"; c.iso"')
  t.equal(contentDisposition('naïve.iso'), 'attachment; filename="na_ve.iso"; filename*=UTF-8\'\'na%C3%AFve.iso')
})

t.test('row 3: dot segments and odd ids never leave /infra-envs/{id} upstream', async t => {
  const { port, upstream } = await service(t)
  for (const sub of ['..', '.', '../..', '%2e%2e', 'a/b', '..%2f', 'a?b=c', 'a#b']) {
    for (const route of ['bytoken', 'byapikey']) {
      const res = await raw(port, get(`/${route}/${jwt({ sub })}/${X86_VERSION}/x86_64/full.iso`))
      t.equal(res.status, 404, `${route} sub=${sub}`)
    }
  }
  t.equal(upstream.calls.length, 0, 'no upstream call at all')
})

t.test('row 4: filenames that are Object.prototype keys are unknown files', async t => {
  const { port } = await service(t)
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', '__defineGetter__']) {
    const res = await raw(port, get(`/byid/${ID}/${X86_VERSION}/x86_64/${name}`))
    t.equal(res.status, 404, name)
    t.match(res.body, /"code":"IMG_FILENAME"/)
  }
})

t.test('row 8: credentials are redacted by meaning, and no secret sent reaches a log line or a body', async t => {
  const { port, logs } = await service(t)
  const secrets = Array.from({ length: 9 }, (_, i) => `S3CR3T${i}x${Math.random().toString(36).slice(2, 10)}`)
  const tokens = secrets.map(s => jwt({ sub: ID, nonce: s }))
  const requests = [
    get(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso?api%5Fkey=${secrets[0]}`, 'HEAD'),
    get(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso?image%5Ftoken=${secrets[1]}&x=1`, 'HEAD'),
    get(`http://127.0.0.1:${port}/bytoken/${tokens[2]}/${X86_VERSION}/x86_64/full.iso`, 'HEAD'),
    get(`//bytoken/${tokens[3]}/${X86_VERSION}/x86_64/full.iso`),
    get(`/BYTOKEN/${tokens[4]}/${X86_VERSION}/x86_64/full.iso`),
    get(`/byapikey%2F${tokens[5]}/${X86_VERSION}/x86_64/full.iso`),
    get(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`, 'HEAD', `Authorization: Bearer ${secrets[6]}`),
    get(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`, 'HEAD', `Image-Token: ${secrets[7]}`),
    get(`/nothing/here?API_KEY=${secrets[8]}`)
  ]
  const bodies: string[] = []
  for (const request of requests) bodies.push((await raw(port, request)).body)
  await new Promise(resolve => setTimeout(resolve, 100))
  const everything = `${logs.text}\n${bodies.join('\n')}`
  for (const [i, secret] of secrets.entries()) {
    t.notOk(everything.includes(secret), `secret ${i} appears nowhere`)
    t.notOk(everything.includes(tokens[i]!.split('.')[1]!), `token ${i} appears nowhere`)
  }
  t.equal(redactUrl(`/s/${'a'.repeat(22)}/full.iso`), '/s/[REDACTED]/full.iso')
  t.equal(redactUrl('/byid/x/full.iso?Api%5FKey=1&keep=2'), '/byid/x/full.iso?Api%5FKey=[REDACTED]&keep=2')
  t.equal(redactUrl(`https://h:1/byapikey/${tokens[0]}/v`), '/byapikey/[REDACTED]/v')
})

t.test('a corpus of 300+ malformed requests: no 5xx of ours, nothing over 10 s, well-formed answers', async t => {
  const { port, logs } = await service(t)
  const token = jwt({ sub: ID, nonce: 'corpus-secret-token' })
  const apiKey = 'corpus-secret-api-key-0123456789'
  const paths = [
    iso(`byid/${ID}`), iso(`bytoken/${token}`), iso(`byapikey/${token}`), `/images/${ID}?version=${X86_VERSION}&type=full-iso`,
    `/images/${ID}/pxe-initrd?version=${X86_VERSION}`, `/boot-artifacts/kernel?version=${X86_VERSION}`, '/health', '/s/xxxxxxxxxxxxxxxxxxxxxx/full.iso'
  ]
  const mutations: Array<(p: string) => string> = [
    p => p, p => p.replace(ID, ID.toUpperCase()), p => p.replace(ID, '../../etc/passwd'), p => p.replace(ID, '%2e%2e%2f%2e%2e'),
    p => p.replace(X86_VERSION, '%00'), p => p.replace(X86_VERSION, 'x'.repeat(3000)), p => p.replace('x86_64', '<script>'),
    p => `${p}${p.includes('?') ? '&' : '?'}version=a&version=b`, p => `${p}${p.includes('?') ? '&' : '?'}arch[]=x`, p => p.replace(/\//g, '//'),
    p => `${p}%`, p => `${p}%zz`, p => p.replace('full.iso', 'full.iso%00.txt'),
    p => p.toUpperCase(), p => `${p.split('?')[0]}/`, p => p.replace('/', '/./'), p => p.replace('/', '/../')
  ]
  const ranges = ['', 'Range: bytes=0-0', 'Range: bytes=-1', 'Range: bytes=99999999999999999999-', 'Range: bytes=5-1', 'Range: bytes=0-1,0-1,0-1,' + '0-1,'.repeat(300) + '0-1',
    'Range: chars=0-1', 'Range: bytes=', 'If-Range: "nope"\r\nRange: bytes=0-10', 'If-Modified-Since: yesterday', 'If-None-Match: *', 'If-Match: "x"',
    'Authorization: ' + 'A'.repeat(8000), 'Content-Length: 5\r\nTransfer-Encoding: chunked', 'Range: bytes=0-0, 1-1', 'Range: bytes=-0',
    'Range: bytes=0-1023\r\nIf-Range: Wed, 21 Oct 2015 07:28:00 GMT', 'Accept-Encoding: gzip', 'Origin: http://evil.example', 'Expect: 100-continue']
  const methods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'PROPFIND', 'TRACE', 'CONNECT']
  const queries = ['version=', 'version=%ff%fe', 'type=nope', 'type=constructor', 'arch=__proto__', 'arch=s390x', 'version[a]=1', 'api_key=&image_token=',
    'version=' + 'v'.repeat(5000), 'type=minimal-iso&arch=s390x', '&&&', '=', 'version=1&version=2&version=3']
  const corpus: string[] = []
  for (const path of paths) for (const mutate of mutations) corpus.push(get(mutate(path)))
  for (const path of paths.slice(0, 4)) for (const header of ranges) corpus.push(get(path, 'GET', header))
  for (const path of paths.slice(0, 3)) for (const method of methods) corpus.push(get(path, method))
  for (const base of [`/images/${ID}`, `/images/${ID}/pxe-initrd`, `/images/${ID}/s390x-initrd-addrsize`, '/boot-artifacts/rootfs', '/boot-artifacts/toString']) {
    for (const query of queries) corpus.push(get(`${base}?${query}`))
  }
  for (const path of paths.slice(0, 4)) {
    corpus.push(get(`${path}${path.includes('?') ? '&' : '?'}api_key=${apiKey}`), get(`${path}${path.includes('?') ? '&' : '?'}api%5Fkey=${apiKey}`, 'HEAD'),
      get(path, 'GET', `Authorization: Bearer ${apiKey}`), get(path, 'GET', `Image-Token: ${apiKey}`))
  }
  corpus.push(get('*', 'OPTIONS'), get('/' + 'a/'.repeat(2000)), 'GET / HTTP/1.0', 'GARBAGE\r\n\r\n', 'GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n')
  t.ok(corpus.length >= 300, `${corpus.length} requests`)
  const statuses = new Map<number, number>()
  const bodies: string[] = []
  let slowest = 0
  for (let i = 0; i < corpus.length; i += 8) {
    const answers = await Promise.all(corpus.slice(i, i + 8).map(async request => ({ request, res: await raw(port, request) })))
    for (const { request, res } of answers) {
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      slowest = Math.max(slowest, res.ms)
      bodies.push(res.head, res.body.slice(0, 4096))
      if (res.status >= 500 && res.status !== 502 && res.status !== 504) t.fail(`${res.status} for ${JSON.stringify(request.slice(0, 200))}: ${res.body.slice(0, 200)}`)
      const length = /\r\ncontent-length: (\S+)/i.exec(res.head)?.[1]
      if (length !== undefined && !/^\d+$/.test(length)) t.fail(`malformed content-length ${length}`)
      if (/\r\n[^:\r\n]*\r\n/.test(`${res.head}\r\n`.slice(res.head.indexOf('\r\n')))) t.fail(`a header line without a colon for ${JSON.stringify(request.slice(0, 100))}`)
    }
  }
  t.ok(slowest < 10_000, `slowest answer ${slowest} ms`)
  t.pass(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`)
  await new Promise(resolve => setTimeout(resolve, 100))
  for (const secret of [token.split('.')[1]!, apiKey]) {
    t.notOk(logs.text.includes(secret), `${secret.slice(0, 12)}…: in no log line`)
    const leak = bodies.find(b => b.includes(secret))
    t.notOk(leak, `${secret.slice(0, 12)}…: in no answer${leak !== undefined ? `: ${leak.slice(0, 600)}` : ''}`)
  }
})
