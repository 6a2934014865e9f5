// The HTTP edge of the error catalog: every code has the answer api.md gives it, and a code nobody mapped
// cannot slip out as anything but a 500.
import t from 'tap'
import * as catalog from '../../../services/errors.ts'
import { answerFor } from '../../../plugins/app/errors.ts'
import { loadConfig } from '../../../services/config.ts'

const config = loadConfig({ DATA_DIR: '/tmp/unused', REQUEST_QUEUE_TIMEOUT: '7' })

/** One instance of every coded error of the catalog. */
function everyError (): catalog.DomainError[] {
  const errors: catalog.DomainError[] = []
  for (const value of Object.values(catalog)) {
    if (typeof value !== 'function' || value === catalog.DomainError || value === catalog.upstreamStatus) continue
    const error = value === catalog.DownloadError ? new catalog.DownloadError('x', false) : new (value as new (...args: unknown[]) => catalog.DomainError)('x', 'y', 'z')
    errors.push(error)
  }
  return errors
}

t.test('every error of the catalog is a DomainError with its own code', async t => {
  const errors = everyError()
  t.ok(errors.length >= 33, `${errors.length} codes`)
  for (const error of errors) t.ok(error instanceof catalog.DomainError && error instanceof Error, error.code)
  t.equal(new Set(errors.map(e => e.code)).size, errors.length, 'no code is used twice')
  t.equal(new catalog.ImageNotReady('4.18', 'x86_64').message, 'OS image 4.18 (x86_64) is not ready yet', 'arguments fill the message')
  t.notOk(new catalog.VersionNotFound('4.18', 'x86_64') instanceof catalog.VersionUnknown, 'instanceof tells codes apart')
})

t.test('statuses, Retry-After and the upstream pass-through', async t => {
  const statusOf = new Map(everyError().map(e => [e.code, answerFor(e, config).status]))
  t.same(Object.fromEntries([...statusOf].filter(([, status]) => status < 500)), {
    IMG_VERSION_REQUIRED: 400,
    IMG_VERSION_UNKNOWN: 400,
    IMG_KARGS_UNSUPPORTED: 400,
    CPIO_FORMAT: 400,
    IMG_FILENAME: 404,
    IMG_BAD_TOKEN: 404,
    IMG_BAD_ID: 404,
    IMG_VERSION_NOT_FOUND: 404,
    IMG_TYPE_NOT_AVAILABLE: 404,
    IMG_ARTIFACT_NOT_FOUND: 404,
    INFRA_ENV_NOT_FOUND: 404,
    SHORT_LINK_NOT_FOUND: 404,
    TOKEN_REFUSED: 401,
    CLIENT_GONE: 499
  }, 'the client errors (499: the client left, as nginx logs it)')
  t.equal(statusOf.get('UPSTREAM_TIMEOUT'), 504)
  for (const code of ['UPSTREAM_UNREACHABLE', 'UPSTREAM_TOO_LARGE', 'UPSTREAM_BAD_ANSWER', 'UPSTREAM_BAD_KARGS', 'UPSTREAM_STATUS']) t.equal(statusOf.get(code), 502, code)
  for (const code of ['IMG_NOT_READY', 'QUEUE_TIMEOUT', 'SHORT_LINK_STORE_UNAVAILABLE']) t.equal(statusOf.get(code), 503, code)
  for (const code of ['IMG_NMSTATE_UNAVAILABLE', 'IMG_EMBED_AREA_TOO_SMALL', 'ISO_FORMAT', 'ROOTFS_FORMAT', 'IMG_DOWNLOAD_FAILED']) t.equal(statusOf.get(code), 500, code)

  t.same(answerFor(new catalog.QueueTimeout(), config).headers, { 'retry-after': '7' }, 'the queue timeout tells when to retry')
  t.same(answerFor(new catalog.ImageNotReady('4.18', 'x86_64'), config).headers, { 'retry-after': '30' })
  t.same(answerFor(new catalog.VersionRequired(), config).headers, {})
  t.equal(answerFor(catalog.upstreamStatus(401, 'ignition'), config).status, 401, 'an upstream 401 is the client\'s answer')
  t.equal(answerFor(catalog.upstreamStatus(302, 'ignition'), config).status, 502, 'anything else from upstream is a bad gateway')
})
