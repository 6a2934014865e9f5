import { createWriteStream } from 'node:fs'
import { open, stat, truncate } from 'node:fs/promises'
import type http from 'node:http'
import type https from 'node:https'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import got, { type Response } from 'got'
import { outboundAgents, type OutboundOptions } from '../http/agents.ts'
import { DownloadError } from '../errors.ts'
import { backoffDelay, sleep } from '../io/backoff.ts'
import { fileSha256 } from '../io/file-hash.ts'

export interface DownloadLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
}

/** Retries wait at most this long, however many attempts failed. */
const MAX_BACKOFF_MS = 30_000

export interface DownloadOptions extends OutboundOptions {
  headers?: Record<string, string>
  query?: Record<string, string>
  attempts?: number
  backoffMs?: number
  progressIntervalMs?: number
  log: DownloadLog
  onBytes?: (n: number) => void
  signal?: AbortSignal
  /** Label for log lines (the OS image key, never the URL: it may carry credentials). */
  label: string
}

/**
 * Downloads `url` into `tempPath` (never the final name): retries network
 * errors and 5xx/429 with exponential backoff and jitter, resumes with
 * Range + If-Range when the server allows it, accepts chunked bodies, checks
 * Content-Length, and fsyncs. Returns the size and SHA-256 of the file.
 */
export async function download (url: string, tempPath: string, options: DownloadOptions): Promise<{ size: number, sha256: string }> {
  const agents = outboundAgents(options)
  const attempts = options.attempts ?? 5
  const base = options.backoffMs ?? 1000
  let validator: string | undefined
  let total: number | undefined
  await open(tempPath, 'w').then(fh => fh.close())
  try {
    for (let attempt = 1; ; attempt++) {
      const have = (await stat(tempPath)).size
      const resumeFrom = validator !== undefined && total !== undefined && have > 0 && have < total ? have : 0
      if (resumeFrom === 0 && have > 0) await truncate(tempPath, 0)
      try {
        const result = await fetchOnce(url, tempPath, resumeFrom, validator, agents, options)
        validator = result.validator
        total = result.total
        const size = (await stat(tempPath)).size
        if (total !== undefined && size !== total) throw new DownloadError(`got ${size} of ${total} bytes`, true)
        break
      } catch (err) {
        const retriable = !(err instanceof DownloadError) || err.retriable
        if (options.signal?.aborted === true) throw err
        if (err instanceof DownloadError && err.validator !== undefined) { validator = err.validator; total = err.total }
        if (!retriable || attempt >= attempts) {
          throw err instanceof DownloadError ? err : new DownloadError((err as Error).message, true)
        }
        const delay = backoffDelay(attempt, { baseMs: base, maxMs: MAX_BACKOFF_MS, jitter: 0.5 })
        options.log.warn({ image: options.label, attempt, error: (err as Error).message, retryInMs: Math.round(delay) }, 'download interrupted, retrying')
        await sleep(delay, options.signal)
      }
    }
    const fh = await open(tempPath, 'r+')
    try { await fh.sync() } finally { await fh.close() }
    return { size: (await stat(tempPath)).size, sha256: await fileSha256(tempPath) }
  } finally {
    agents.http.destroy()
    agents.https.destroy()
  }
}

async function fetchOnce (url: string, tempPath: string, resumeFrom: number, validator: string | undefined,
  agents: { http: http.Agent, https: https.Agent }, options: DownloadOptions): Promise<{ validator?: string, total?: number }> {
  const headers: Record<string, string> = { ...(options.headers ?? {}) }
  if (resumeFrom > 0 && validator !== undefined) {
    headers.range = `bytes=${resumeFrom}-`
    headers['if-range'] = validator
  }
  const target = new URL(url)
  for (const [k, v] of Object.entries(options.query ?? {})) target.searchParams.set(k, v)
  const request = got.stream(target, {
    headers,
    agent: agents,
    decompress: false,
    throwHttpErrors: false,
    retry: { limit: 0 },
    timeout: { lookup: 30_000, connect: 30_000, secureConnect: 30_000, response: 60_000, read: 120_000 },
    ...(options.signal !== undefined ? { signal: options.signal } : {})
  })
  const response = await new Promise<Response>((resolve, reject) => {
    request.once('response', resolve)
    request.once('error', reject)
  })
  const status = response.statusCode
  const etag = response.headers.etag
  const lastModified = response.headers['last-modified']
  // Only a strong ETag or a date may go into If-Range.
  const nextValidator = etag !== undefined && !etag.startsWith('W/') ? etag : lastModified
  if (status !== 200 && status !== 206) {
    request.destroy()
    throw new DownloadError(`mirror answered HTTP ${status}`, status >= 500 || status === 429 || status === 408)
  }
  let append = false
  let total: number | undefined
  if (status === 206) {
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers['content-range'] ?? '')
    if (range === null || Number(range[1]) !== resumeFrom) {
      request.destroy()
      await truncate(tempPath, 0)
      throw new DownloadError('mirror answered an unexpected range', true)
    }
    append = true
    total = range[3] === '*' ? undefined : Number(range[3])
  } else {
    // A 200 to a resume means the file changed or ranges are unsupported: start over.
    const length = response.headers['content-length']
    total = length !== undefined ? Number(length) : undefined
  }
  let received = append ? resumeFrom : 0
  let lastLog = Date.now()
  let lastBytes = received
  const interval = options.progressIntervalMs ?? 5000
  const counter = new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      received += chunk.length
      options.onBytes?.(chunk.length)
      const now = Date.now()
      if (now - lastLog >= interval && now > lastLog) {
        const rate = (received - lastBytes) / ((now - lastLog) / 1000)
        options.log.info({
          image: options.label,
          bytes: received,
          ...(total !== undefined
            ? { percent: Math.floor(received / total * 1000) / 10, etaSeconds: rate > 0 ? Math.round((total - received) / rate) : undefined }
            : {}),
          bytesPerSecond: Math.round(rate)
        }, 'downloading')
        lastLog = now
        lastBytes = received
      }
      callback(null, chunk)
    }
  })
  try {
    await pipeline(request, counter, createWriteStream(tempPath, { flags: append ? 'a' : 'w' }))
  } catch (err) {
    const failure = new DownloadError(`transfer failed after ${received} bytes: ${(err as Error).message}`, true)
    if (nextValidator !== undefined) failure.validator = nextValidator
    if (total !== undefined) failure.total = total
    throw failure
  }
  return { ...(nextValidator !== undefined ? { validator: nextValidator } : {}), ...(total !== undefined ? { total } : {}) }
}
