import t, { type Test } from 'tap'
import { createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { jwt } from '../fixtures/fake-assisted.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'
import { ConfigError, loadConfig } from '../../services/config.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const isos = await routeIsos(t.testdir())
const now = () => Math.floor(Date.now() / 1000)

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
const b64url = (value: object | Buffer) => (Buffer.isBuffer(value) ? value : Buffer.from(JSON.stringify(value))).toString('base64url')

/** A JWT signed here with node:crypto, not with the library under test. */
function signed (claims: Record<string, unknown>, key: KeyObject = privateKey, alg = 'ES256'): string {
  const input = `${b64url({ alg, typ: 'JWT' })}.${b64url(claims)}`
  const digest = alg === 'ES384' ? 'sha384' : 'sha256'
  return `${input}.${b64url(sign(digest, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }))}`
}

const valid = () => signed({ infra_env_id: ID, exp: now() + 3600 })

async function service (t: Test, env: Record<string, string> = {}) {
  return await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, env })
}

const refusedCount = (metrics: string, reason: string) => Number(new RegExp(`^assisted_image_service_tokens_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(metrics)?.[1])

t.test('with EC_PUBLIC_KEY_PEM, /byapikey/ tokens are verified before anything is asked upstream', async t => {
  const { app, upstream, logs } = await service(t, { EC_PUBLIC_KEY_PEM: publicPem })
  const good = valid()
  const ok = await app.inject(`/byapikey/${good}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(ok.statusCode, 200, 'a token signed with the key is served')
  t.ok(upstream.calls.length > 0 && upstream.calls.every(c => c.query.get('api_key') === good), 'and forwarded exactly as before')
  t.match(ok.headers.link, /\/s\/[A-Za-z0-9_-]{22}\/full\.iso>/)

  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey
  const unsignedInput = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ infra_env_id: ID, exp: now() + 3600 })}`
  const hsInput = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ infra_env_id: ID, exp: now() + 3600 })}`
  const refused: Array<[string, string, string]> = [
    ['forged signature', signed({ infra_env_id: ID, exp: now() + 3600 }, other), 'bad_signature'],
    ['alg none', `${unsignedInput}.`, 'bad_signature'],
    ['HS256 with the public key as secret', `${hsInput}.${b64url(createHmac('sha256', publicPem).update(hsInput).digest())}`, 'bad_signature'],
    ['another curve (ES384, P-384)', signed({ infra_env_id: ID, exp: now() + 3600 }, p384, 'ES384'), 'bad_signature'],
    ['no infra_env_id', signed({ sub: ID, exp: now() + 3600 }), 'missing_claim'],
    ['expired', signed({ infra_env_id: ID, exp: now() - 300 }), 'expired'],
    ['not a JWT', 'not.a.jwt', 'malformed'],
    ['unsigned fake of the test fixtures', jwt({ infra_env_id: ID, exp: now() + 3600 }), 'bad_signature']
  ]
  upstream.calls.length = 0
  for (const [what, token] of refused) {
    const res = await app.inject(`/byapikey/${token}/${X86_VERSION}/x86_64/minimal.iso`)
    t.equal(res.statusCode, 401, `${what}: 401`)
    t.equal(res.json().code, 'TOKEN_REFUSED', what)
    t.notOk(res.json().message.includes('\n'), `${what}: a one-line reason (${res.json().message})`)
    t.equal(res.headers.link, undefined, `${what}: no short link is minted`)
  }
  t.equal(upstream.calls.length, 0, 'no refused token reaches assisted-service')

  const query = await app.inject(`/images/${ID}?version=${X86_VERSION}&type=full-iso&api_key=${refused[0]![1]}`)
  t.equal(query.statusCode, 401, 'an api_key query parameter is the same kind of token and is verified too')
  t.equal((await app.inject(`/images/${ID}/pxe-initrd?version=${X86_VERSION}&api_key=${refused[5]![1]}`)).statusCode, 401, 'an expired api_key query on PXE')
  t.equal(upstream.calls.length, 0)

  const metrics = (await app.inject('/metrics')).body
  t.equal(refusedCount(metrics, 'bad_signature'), 6, 'refusals counted by reason')
  t.equal(refusedCount(metrics, 'missing_claim'), 1)
  t.equal(refusedCount(metrics, 'expired'), 2)
  t.equal(refusedCount(metrics, 'malformed'), 1)
  for (const [what, token] of refused) t.notOk(logs.text.includes(token.split('.')[2] || token.split('.')[1]!), `${what}: the token is in no log line`)
  t.notOk(logs.text.includes(good.split('.')[1]!), 'nor is the valid one')
  t.match(logs.text, /"reason":"bad_signature".*"msg":"token refused"/)
})

t.test('the clock tolerance lets a just-expired token through, and no more', async t => {
  const { app } = await service(t, { EC_PUBLIC_KEY_PEM: publicPem, JWT_CLOCK_TOLERANCE_SECONDS: '60' })
  t.equal((await app.inject({ method: 'HEAD', url: `/byapikey/${signed({ infra_env_id: ID, exp: now() - 20 })}/${X86_VERSION}/x86_64/full.iso` })).statusCode, 200)
  t.equal((await app.inject({ method: 'HEAD', url: `/byapikey/${signed({ infra_env_id: ID, exp: now() - 120 })}/${X86_VERSION}/x86_64/full.iso` })).statusCode, 401)
  t.equal((await app.inject({ method: 'HEAD', url: `/byapikey/${signed({ infra_env_id: ID, exp: now() + 3600, nbf: now() + 600 })}/${X86_VERSION}/x86_64/full.iso` })).statusCode, 401, 'not valid before nbf')
})

t.test('without a key, tokens are forwarded unverified, and only an expired one is refused', async t => {
  const { app, upstream } = await service(t)
  const forged = signed({ infra_env_id: ID, exp: now() + 3600 }, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)
  t.equal((await app.inject(`/byapikey/${forged}/${X86_VERSION}/x86_64/full.iso`)).statusCode, 200, 'forwarded as today')
  t.ok(upstream.calls.some(c => c.query.get('api_key') === forged), 'assisted-service decides')

  upstream.calls.length = 0
  const expiredImageToken = jwt({ sub: ID, exp: now() - 300 })
  const res = await app.inject(`/bytoken/${expiredImageToken}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(res.statusCode, 401, 'an expired /bytoken/ token')
  t.match(res.json(), { code: 'TOKEN_REFUSED', message: 'the token has expired' })
  t.equal((await app.inject(`/byapikey/${jwt({ infra_env_id: ID, exp: now() - 300 })}/${X86_VERSION}/x86_64/full.iso`)).statusCode, 401, 'an expired /byapikey/ token')
  t.equal((await app.inject(`/images/${ID}?version=${X86_VERSION}&type=full-iso&image_token=${expiredImageToken}`)).statusCode, 401, 'an expired image_token query')
  t.equal(upstream.calls.length, 0, 'none reached assisted-service')

  t.equal((await app.inject(`/bytoken/not-a-jwt/${X86_VERSION}/x86_64/full.iso`)).statusCode, 404, 'a token that names no image is still 404')
  t.equal((await app.inject(`/images/${ID}?version=${X86_VERSION}&type=full-iso&api_key=opaque-key`)).statusCode, 200, 'an opaque api_key is forwarded')
  const padded = jwt({ sub: ID, exp: now() + 3600, note: '>>>???' }, 'base64')
  t.ok(/[+/=]/.test(padded), 'the token uses standard base64 with padding')
  t.equal((await app.inject({ method: 'HEAD', url: `/bytoken/${encodeURIComponent(padded)}/${X86_VERSION}/x86_64/full.iso` })).statusCode, 200, 'standard base64, padded, is still read')
})

t.test('a short link whose token expired answers 401, as its long URL does', async t => {
  const { app, upstream } = await service(t, { EC_PUBLIC_KEY_PEM: publicPem, JWT_CLOCK_TOLERANCE_SECONDS: '0' })
  const exp = now() + 2
  const res = await app.inject({ method: 'HEAD', url: `/byapikey/${signed({ infra_env_id: ID, exp })}/${X86_VERSION}/x86_64/full.iso` })
  t.equal(res.statusCode, 200)
  const path = new URL(/^<([^>]+)>/.exec(res.headers.link as string)![1]!).pathname
  t.equal((await app.inject({ method: 'HEAD', url: path })).statusCode, 200, 'served while the token is valid')
  await new Promise(resolve => setTimeout(resolve, exp * 1000 - Date.now() + 100))
  upstream.calls.length = 0
  const late = await app.inject(path)
  t.equal(late.statusCode, 401, 'expired: 401, not 404')
  t.equal(late.json().message, 'the token has expired')
  t.equal(upstream.calls.length, 0)
})

t.test('the key comes from EC_PUBLIC_KEY_PEM or a mounted file, and must be P-256', async t => {
  const dir = t.testdir()
  writeFileSync(`${dir}/key.pem`, publicPem)
  const base = { DATA_DIR: `${dir}/data` }
  t.equal(loadConfig({ ...base, EC_PUBLIC_KEY_PEM_FILE: `${dir}/key.pem` }).tokens.publicKeyPem, publicPem)
  t.equal(loadConfig({ ...base, EC_PUBLIC_KEY_PEM: publicPem.replaceAll('\n', '\\n') }).tokens.publicKeyPem, publicPem, 'newlines written as \\n')
  t.equal(loadConfig(base).tokens.clockToleranceSeconds, 60, 'a minute of clock skew by default')
  const problem = (env: Record<string, string>) => {
    try { loadConfig({ ...base, ...env }); return undefined } catch (error) { return (error as ConfigError).problems.join('; ') }
  }
  t.match(problem({ EC_PUBLIC_KEY_PEM: generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'pem' }).toString() }), /EC_PUBLIC_KEY_PEM: must be a P-256/)
  t.match(problem({ EC_PUBLIC_KEY_PEM: generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString() }), /must be a P-256/)
  t.match(problem({ EC_PUBLIC_KEY_PEM: 'not a key' }), /EC_PUBLIC_KEY_PEM: not a PEM public key/)
  t.match(problem({ EC_PUBLIC_KEY_PEM_FILE: `${dir}/missing.pem` }), /EC_PUBLIC_KEY_PEM_FILE: cannot read file/)
  t.match(problem({ EC_PUBLIC_KEY_PEM: publicPem, EC_PUBLIC_KEY_PEM_FILE: `${dir}/key.pem` }), /set one, not both/)
})
