import type http from 'node:http'
import type https from 'node:https'
import got, { type Response } from 'got'
import { OriginChanged } from '../errors.ts'
import { outboundAgents, type OutboundOptions } from '../http/agents.ts'

export interface OriginClientOptions extends OutboundOptions {
  /** OS_IMAGES_REQUEST_HEADERS and OS_IMAGES_REQUEST_QUERY_PARAMS, added to every request. */
  headers?: Record<string, string>
  query?: Record<string, string>
  /**
   * Longest wait for an answer's headers, and between two chunks of its body.
   * Shorter than a reader's whole wait, so that a connection that hangs is
   * given up and the fetch tried again in time (default 10 s).
   */
  timeoutMs?: number
}

/** The file at the origin, as a block cache needs to know it before any of its bytes. */
export interface OriginFile {
  size: number
  /** A strong ETag (`"…"`) or an HTTP date: what every block fetch is conditional on. */
  validator: string
}

/** Why an origin cannot be read by ranges; the image is then downloaded whole. */
export interface RangelessOrigin { rangeless: string }

/** A failed fetch that may go right when tried again (network, 5xx, 429, a short body). */
export class TransientFetchError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TransientFetchError'
  }
}

const RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/

/**
 * Reads one OS image at its origin by byte ranges. Every fetch is conditional
 * on the validator the cache was built from (If-Match for an ETag,
 * If-Unmodified-Since for a date), and its answer is checked against it: a
 * file that changed at the origin is an OriginChanged error, never bytes.
 */
export class OriginClient {
  readonly #url: URL
  readonly #headers: Record<string, string>
  readonly #timeoutMs: number
  readonly #agents: { http: http.Agent, https: https.Agent }

  constructor (url: string, options: OriginClientOptions = {}) {
    this.#url = new URL(url)
    for (const [k, v] of Object.entries(options.query ?? {})) this.#url.searchParams.set(k, v)
    this.#headers = options.headers ?? {}
    this.#timeoutMs = options.timeoutMs ?? 10_000
    this.#agents = outboundAgents(options)
  }

  /**
   * Asks for the first byte: an origin that answers 206 with the file's size
   * and a strong ETag or a Last-Modified date can be read by blocks.
   */
  async probe (signal?: AbortSignal): Promise<OriginFile | RangelessOrigin> {
    const { response, body } = await this.#request({ range: 'bytes=0-0' }, signal)
    body.destroy()
    if (response.statusCode === 200) return { rangeless: 'the origin answers Range requests with the whole file' }
    if (response.statusCode !== 206) throw this.#statusError(response.statusCode)
    const range = RANGE.exec(response.headers['content-range'] ?? '')
    if (range === null) return { rangeless: 'the origin gives no file size in Content-Range' }
    const validator = strongValidator(response.headers)
    if (validator === undefined) return { rangeless: 'the origin gives neither a strong ETag nor Last-Modified' }
    return { size: Number(range[3]), validator }
  }

  /** Bytes [start, end) of the file `file` describes, read into `into` when given (a reused buffer). */
  async fetch (file: OriginFile, start: number, end: number, signal?: AbortSignal, into?: Buffer): Promise<Buffer> {
    const condition: Record<string, string> = file.validator.startsWith('"') ? { 'if-match': file.validator } : { 'if-unmodified-since': file.validator }
    const { response, body } = await this.#request({ range: `bytes=${start}-${end - 1}`, ...condition }, signal)
    const status = response.statusCode
    try {
      if (status === 412 || status === 200) throw new OriginChanged(`it answered ${status} to a range conditional on ${file.validator}`)
      if (status !== 206) throw this.#statusError(status)
      const range = RANGE.exec(response.headers['content-range'] ?? '')
      if (range === null || Number(range[1]) !== start || Number(range[2]) !== end - 1) throw new TransientFetchError('the origin answered another range')
      if (Number(range[3]) !== file.size) throw new OriginChanged(`its size is now ${range[3]}, not ${file.size}`)
      const validator = strongValidator(response.headers)
      if (validator !== undefined && validator !== file.validator && file.validator.startsWith('"') === validator.startsWith('"')) {
        throw new OriginChanged(`its validator is now ${validator}, not ${file.validator}`)
      }
    } catch (err) {
      body.destroy()
      throw err
    }
    return await readBody(body, end - start, into)
  }

  close (): void {
    this.#agents.http.destroy()
    this.#agents.https.destroy()
  }

  /** 5xx, 429, 408: try again; 404 and 410: the file is gone (changed); any other answer fails the fetch. */
  #statusError (status: number): Error {
    if (status >= 500 || status === 429 || status === 408) return new TransientFetchError(`the origin answered HTTP ${status}`)
    if (status === 404 || status === 410) return new OriginChanged(`it answered HTTP ${status}`)
    return new Error(`the origin answered HTTP ${status}`)
  }

  async #request (headers: Record<string, string>, signal?: AbortSignal): Promise<{ response: Response, body: ReturnType<typeof got.stream> }> {
    const body = got.stream(this.#url, {
      headers: { ...this.#headers, ...headers },
      agent: this.#agents,
      decompress: false,
      throwHttpErrors: false,
      retry: { limit: 0 },
      timeout: { lookup: this.#timeoutMs, connect: this.#timeoutMs, secureConnect: this.#timeoutMs, response: this.#timeoutMs, read: this.#timeoutMs },
      ...(signal !== undefined ? { signal } : {})
    })
    try {
      const response = await new Promise<Response>((resolve, reject) => {
        body.once('response', resolve)
        body.once('error', reject)
      })
      return { response, body }
    } catch (err) {
      body.destroy()
      if (signal?.aborted === true) throw err
      throw new TransientFetchError(`cannot reach the origin: ${(err as Error).message}`)
    }
  }
}

/** A strong ETag, else Last-Modified: the two validators a conditional range request may rest on. */
function strongValidator (headers: http.IncomingHttpHeaders): string | undefined {
  const etag = headers.etag
  if (etag !== undefined && etag.startsWith('"')) return etag
  return headers['last-modified']
}

/** Exactly `length` bytes of a body, into one buffer. */
async function readBody (body: ReturnType<typeof got.stream>, length: number, into?: Buffer): Promise<Buffer> {
  const bytes = into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length)
  let at = 0
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (at + chunk.length > length) throw new TransientFetchError('the origin sent more bytes than asked for')
      at += chunk.copy(bytes, at)
    }
  } catch (err) {
    body.destroy()
    if (err instanceof TransientFetchError) throw err
    throw new TransientFetchError(`the transfer failed after ${at} bytes: ${(err as Error).message}`)
  }
  if (at !== length) throw new TransientFetchError(`the origin sent ${at} of ${length} bytes`)
  return bytes
}
