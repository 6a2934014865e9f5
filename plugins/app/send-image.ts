import fp from 'fastify-plugin'
import { Counter } from 'prom-client'
import type { FastifyReply } from 'fastify'
import { validateHeaderValue, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import type { ComposedImage } from '../../services/compose/composed-image.ts'
import type { ImageWriter } from '../../services/compose/image-writer.ts'
import { planImageResponse, writeImageBody, type ImageMeta } from '../../services/http/image-response.ts'
import { METRIC_PREFIX } from '../../services/observe/metrics.ts'
import { errorBody } from './errors.ts'

declare module 'fastify' {
  interface FastifyReply {
    /** Sends a composed image with HEAD, Range, multipart ranges and conditionals, streamed with backpressure. */
    sendImage (image: ComposedImage, meta: ImageMeta): Promise<void>
  }
}

/** What a response has fetched from an image's origin before it starts: a BMC's whole range, a stream's first blocks. */
const FETCH_AHEAD_BYTES = 4 << 20

interface SendOptions {
  writer: ImageWriter
  idleTimeoutMs: number
  onIdleTimeout: () => void
}

async function sendImage (this: FastifyReply, image: ComposedImage, meta: ImageMeta, options: SendOptions): Promise<void> {
  const request = this.request
  const plan = planImageResponse(image, meta, request.headers)
  if (plan.kind === 'short') {
    await this.code(plan.status).headers(plan.headers).send(plan.error !== undefined ? errorBody(plan.error.code, plan.error.message) : undefined)
    return
  }

  // Bytes an image's origin must send first are fetched while a failure can still be a 503 (a BMC retries it).
  const first = plan.parts[0]!
  if (request.method !== 'HEAD') await options.writer.fetchAhead(image, first.start, Math.min(first.end, first.start + FETCH_AHEAD_BYTES))

  // Every header is checked while Fastify still answers errors: after hijack() nothing may throw unanswered.
  const headers = { ...this.getHeaders(), ...plan.headers } as OutgoingHttpHeaders
  for (const [name, value] of Object.entries(headers)) {
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
    res.writeHead(plan.status, headers)
    if (request.method === 'HEAD') { res.end(); return }
    await writeImageBody(res, options.writer, image, plan.parts, plan.tail)
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
  const options: SendOptions = { writer: fastify.imageWriter, idleTimeoutMs: fastify.config.sendIdleTimeoutSeconds * 1000, onIdleTimeout: () => evicted.inc() }
  fastify.decorateReply('sendImage', function (this: FastifyReply, image: ComposedImage, meta: ImageMeta) {
    return sendImage.call(this, image, meta, options)
  })
}, { name: 'send-image', fastify: '5.x', dependencies: ['config', 'metrics', 'image-store'] })
