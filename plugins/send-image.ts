import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import { Counter } from 'prom-client'
import { METRIC_PREFIX } from '../services/metrics.ts'
import type { FastifyReply } from 'fastify'
import { validateHeaderValue, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import type { ComposedImage } from '../services/compose/composed-image.ts'
import { contentDisposition } from '../services/http/content-disposition.ts'
import { evaluatePreconditions, ifRangeMatches, multipartLayout, parseRange } from '../services/http/ranges.ts'
import { errorBody } from './errors.ts'

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

interface SendOptions {
  idleTimeoutMs: number
  onIdleTimeout: () => void
}

async function sendImage (this: FastifyReply, image: ComposedImage, meta: ImageMeta, options: SendOptions): Promise<void> {
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
  if (verdict === 412) { await this.code(412).headers(common).send(errorBody('PRECONDITION_FAILED', 'precondition failed')); return }

  const range = ifRangeMatches(request.headers, validators) ? parseRange(request.headers.range, image.size) : { kind: 'none' as const }
  if (range.kind === 'unsatisfiable') {
    await this.code(416).headers({ ...common, 'content-range': `bytes */${image.size}` }).send(errorBody('RANGE_NOT_SATISFIABLE', `the image has ${image.size} bytes`))
    return
  }
  const headers: Record<string, string | number> = { ...common, 'content-disposition': contentDisposition(meta.filename) }
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

  // Every header is checked while Fastify still answers errors: after hijack() nothing may throw unanswered.
  const allHeaders = { ...this.getHeaders(), ...headers } as OutgoingHttpHeaders
  for (const [name, value] of Object.entries(allHeaders)) {
    if (value !== undefined) for (const v of Array.isArray(value) ? value : [value]) validateHeaderValue(name, String(v))
  }

  // From here on we write the response ourselves: large bodies stream through a buffer pool.
  this.hijack()
  const res = this.raw
  // A client that stops reading stalls our writes: after the idle timeout the socket is destroyed, which
  // ends writeTo, returns its buffers and (through 'close') the concurrency slot. Any progress resets it.
  watchProgress(res, options.idleTimeoutMs, () => {
    options.onIdleTimeout()
    request.log.warn({ idleSeconds: options.idleTimeoutMs / 1000 }, 'client stopped reading; response cut off')
    res.destroy()
  })
  try {
    res.writeHead(status, allHeaders)
    if (request.method === 'HEAD') { res.end(); return }
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

/**
 * Calls `onIdle` when the bytes handed to the socket have not changed for
 * `idleMs`. An unref'd interval, cleared with the response: it never keeps the
 * process alive, and it leaves the socket's own timeouts (keep-alive) alone.
 */
function watchProgress (res: ServerResponse, idleMs: number, onIdle: () => void): void {
  const progress = (): number => res.socket?.bytesWritten ?? 0
  let last = progress()
  let lastChange = Date.now()
  const timer = setInterval(() => {
    const now = progress()
    if (now !== last) { last = now; lastChange = Date.now(); return }
    if (Date.now() - lastChange >= idleMs) { clearInterval(timer); onIdle() }
  }, Math.max(50, Math.min(5000, idleMs / 4)))
  timer.unref()
  res.once('close', () => clearInterval(timer))
}

export default fp(async function sendImagePlugin (fastify) {
  const evicted = new Counter({ name: `${METRIC_PREFIX}responses_idle_timeout_total`, help: 'Image responses cut off because the client stopped reading', registers: [fastify.metricsRegistry] })
  const options: SendOptions = { idleTimeoutMs: fastify.config.sendIdleTimeoutSeconds * 1000, onIdleTimeout: () => evicted.inc() }
  fastify.decorateReply('sendImage', function (this: FastifyReply, image: ComposedImage, meta: ImageMeta) {
    return sendImage.call(this, image, meta, options)
  })
}, { name: 'send-image', fastify: '5.x', dependencies: ['config', 'metrics'] })
