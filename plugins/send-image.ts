import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyReply } from 'fastify'
import type { ComposedImage } from '../services/compose/composed-image.ts'
import { evaluatePreconditions, ifRangeMatches, multipartLayout, parseRange } from '../services/http/ranges.ts'

export interface ImageMeta {
  /** For Content-Disposition. */
  filename: string
  lastModified: Date
  cacheControl?: string
}

declare module 'fastify' {
  interface FastifyReply {
    /** Sends a composed image with HEAD, Range, multipart ranges and conditionals, streamed with backpressure. */
    sendImage (image: ComposedImage, meta: ImageMeta): Promise<void>
  }
}

const CONTENT_TYPE = 'application/octet-stream'

async function sendImage (this: FastifyReply, image: ComposedImage, meta: ImageMeta): Promise<void> {
  const request = this.request
  const validators = { etag: image.etag, lastModified: meta.lastModified }
  const common: Record<string, string> = {
    etag: image.etag,
    'last-modified': meta.lastModified.toUTCString(),
    'accept-ranges': 'bytes',
    ...(meta.cacheControl !== undefined ? { 'cache-control': meta.cacheControl } : {})
  }
  const verdict = evaluatePreconditions(request.headers, validators)
  if (verdict === 304) { await this.code(304).headers(common).send(); return }
  if (verdict === 412) { await this.code(412).headers(common).send({ code: 'PRECONDITION_FAILED', message: 'precondition failed' }); return }

  const range = ifRangeMatches(request.headers, validators) ? parseRange(request.headers.range, image.size) : { kind: 'none' as const }
  if (range.kind === 'unsatisfiable') {
    await this.code(416).headers({ ...common, 'content-range': `bytes */${image.size}` }).send({ code: 'RANGE_NOT_SATISFIABLE', message: `the image has ${image.size} bytes` })
    return
  }
  const headers: Record<string, string | number> = { ...common, 'content-disposition': `attachment; filename=${meta.filename}` }
  let status = 200
  let parts: Array<{ head?: Buffer, start: number, end: number }> = [{ start: 0, end: image.size }]
  let tail: Buffer | undefined
  if (range.kind === 'ranges' && range.ranges.length === 1) {
    const r = range.ranges[0]!
    status = 206
    headers['content-range'] = `bytes ${r.start}-${r.end - 1}/${image.size}`
    headers['content-type'] = CONTENT_TYPE
    headers['content-length'] = r.end - r.start
    parts = [r]
  } else if (range.kind === 'ranges') {
    const boundary = randomBytes(12).toString('hex')
    const layout = multipartLayout(range.ranges, image.size, CONTENT_TYPE, boundary)
    status = 206
    headers['content-type'] = `multipart/byteranges; boundary=${boundary}`
    headers['content-length'] = layout.length
    parts = range.ranges.map((r, i) => ({ head: layout.heads[i]!, ...r }))
    tail = layout.tail
  } else {
    headers['content-type'] = CONTENT_TYPE
    headers['content-length'] = image.size
  }

  // From here on we write the response ourselves: large bodies stream through a buffer pool.
  this.hijack()
  const res = this.raw
  res.writeHead(status, { ...this.getHeaders(), ...headers } as import('node:http').OutgoingHttpHeaders)
  if (request.method === 'HEAD') { res.end(); return }
  try {
    for (const part of parts) {
      if (part.head !== undefined) res.write(part.head)
      await image.writeTo(res, part.start, part.end)
    }
    if (tail !== undefined) res.write(tail)
    res.end()
  } catch (err) {
    if (!res.destroyed) request.log.error({ err }, 'image stream failed')
    res.destroy()
  }
}

export default fp(async function sendImagePlugin (fastify) {
  fastify.decorateReply('sendImage', sendImage)
}, { name: 'send-image', fastify: '5.x' })
