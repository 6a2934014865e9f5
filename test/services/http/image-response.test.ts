// The decision half of sending an image, alone: status, headers and byte ranges from request headers.
import t from 'tap'
import { planImageResponse, type ImageResponse } from '../../../services/http/image-response.ts'

const image = { size: 1000, etag: '"abc"' }
const meta = { filename: 'host-discovery.iso', lastModified: new Date('2025-01-01T00:00:00Z'), cacheControl: 'public, max-age=60' }
const plan = (headers: Record<string, string>): ImageResponse => planImageResponse(image, meta, headers, () => 'BOUNDARY')

t.test('no conditions, no range: the whole image', async t => {
  const answer = plan({})
  t.match(answer, { kind: 'body', status: 200, parts: [{ start: 0, end: 1000 }] })
  t.match(answer.headers, {
    etag: '"abc"',
    'last-modified': 'Wed, 01 Jan 2025 00:00:00 GMT',
    'accept-ranges': 'bytes',
    'cache-control': 'public, max-age=60',
    'content-type': 'application/octet-stream',
    'content-length': 1000,
    'content-disposition': 'attachment; filename=host-discovery.iso'
  })
})

t.test('one range: 206 with Content-Range; an end past the image is clamped', async t => {
  t.match(plan({ range: 'bytes=10-19' }), { status: 206, parts: [{ start: 10, end: 20 }], headers: { 'content-range': 'bytes 10-19/1000', 'content-length': 10 } })
  t.match(plan({ range: 'bytes=990-5000' }), { status: 206, parts: [{ start: 990, end: 1000 }], headers: { 'content-range': 'bytes 990-999/1000' } })
  t.match(plan({ range: 'bytes=-5' }), { status: 206, parts: [{ start: 995, end: 1000 }] })
})

t.test('several ranges: multipart/byteranges whose length counts heads, parts and tail', async t => {
  const answer = plan({ range: 'bytes=0-9,500-509' })
  if (answer.kind !== 'body') throw new Error('expected a body')
  t.equal(answer.status, 206)
  t.equal(answer.headers['content-type'], 'multipart/byteranges; boundary=BOUNDARY')
  t.same(answer.parts.map(p => [p.start, p.end]), [[0, 10], [500, 510]])
  const heads = answer.parts.map(p => p.head!.toString())
  t.match(heads[0], /--BOUNDARY\r\nContent-Type: application\/octet-stream\r\nContent-Range: bytes 0-9\/1000\r\n\r\n$/)
  const length = answer.parts.reduce((sum, p) => sum + p.head!.length + p.end - p.start, 0) + answer.tail!.length
  t.equal(answer.headers['content-length'], length)
  t.equal(answer.tail!.toString(), '\r\n--BOUNDARY--\r\n')
})

t.test('conditionals: 304, 412, 416, and If-Range that no longer matches', async t => {
  t.same(plan({ 'if-none-match': '"abc"' }), { kind: 'short', status: 304, headers: { etag: '"abc"', 'last-modified': 'Wed, 01 Jan 2025 00:00:00 GMT', 'accept-ranges': 'bytes', 'cache-control': 'public, max-age=60' } })
  t.match(plan({ 'if-match': '"other"' }), { kind: 'short', status: 412, error: { code: 'PRECONDITION_FAILED' } })
  t.match(plan({ range: 'bytes=2000-3000' }), { kind: 'short', status: 416, headers: { 'content-range': 'bytes */1000' }, error: { code: 'RANGE_NOT_SATISFIABLE', message: 'the image has 1000 bytes' } })
  t.match(plan({ range: 'bytes=0-9', 'if-range': '"old"' }), { status: 200, parts: [{ start: 0, end: 1000 }] }, 'a changed image is sent whole')
  t.match(plan({ range: 'bytes=0-9', 'if-range': '"abc"' }), { status: 206 })
  t.match(plan({ range: 'pages=1-2' }), { status: 200 }, 'a range header we cannot read is ignored')
})
