import { randomBytes } from 'node:crypto'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { ComposedImage } from '../compose/composed-image.ts'
import type { ImageWriter } from '../compose/image-writer.ts'
import { contentDisposition } from './content-disposition.ts'
import { evaluatePreconditions, ifRangeMatches, multipartLayout, parseRange, type ByteRange } from './ranges.ts'

export interface ImageMeta {
  /** For Content-Disposition. */
  filename: string
  lastModified: Date
  cacheControl?: string
}

/** One byte range of the image, after the multipart head that introduces it (if any). */
export interface BodyPart extends ByteRange { head?: Buffer }

/**
 * The answer to a request for an image, decided from the request's headers
 * alone: a short answer (304, 412, 416) with an optional error body, or the
 * image's bytes (200, 206) as ranges to stream.
 */
export type ImageResponse =
  | { kind: 'short', status: 304 | 412 | 416, headers: Record<string, string>, error?: { code: string, message: string } }
  | { kind: 'body', status: 200 | 206, headers: Record<string, string | number>, parts: BodyPart[], tail?: Buffer }

const CONTENT_TYPE = 'application/octet-stream'

/**
 * HEAD, conditionals (RFC 9110 §13), single and multipart ranges (§14) for an
 * image of `size` bytes with strong validators. `boundary` names the multipart
 * separator (random by default).
 */
export function planImageResponse (
  image: Pick<ComposedImage, 'size' | 'etag'>,
  meta: ImageMeta,
  request: IncomingHttpHeaders,
  boundary: () => string = () => randomBytes(12).toString('hex')
): ImageResponse {
  const validators = { etag: image.etag, lastModified: meta.lastModified }
  const common: Record<string, string> = {
    etag: image.etag,
    'last-modified': meta.lastModified.toUTCString(),
    'accept-ranges': 'bytes',
    ...(meta.cacheControl !== undefined ? { 'cache-control': meta.cacheControl } : {})
  }
  const verdict = evaluatePreconditions(request, validators)
  if (verdict === 304) return { kind: 'short', status: 304, headers: common }
  if (verdict === 412) return { kind: 'short', status: 412, headers: common, error: { code: 'PRECONDITION_FAILED', message: 'precondition failed' } }

  const range = ifRangeMatches(request, validators) ? parseRange(request.range, image.size) : { kind: 'none' as const }
  if (range.kind === 'unsatisfiable') {
    return {
      kind: 'short',
      status: 416,
      headers: { ...common, 'content-range': `bytes */${image.size}` },
      error: { code: 'RANGE_NOT_SATISFIABLE', message: `the image has ${image.size} bytes` }
    }
  }
  const headers = { ...common, 'content-disposition': contentDisposition(meta.filename) }
  if (range.kind === 'none') {
    return { kind: 'body', status: 200, headers: { ...headers, 'content-type': CONTENT_TYPE, 'content-length': image.size }, parts: [{ start: 0, end: image.size }] }
  }
  if (range.ranges.length === 1) {
    const only = range.ranges[0]!
    return {
      kind: 'body',
      status: 206,
      headers: { ...headers, 'content-range': `bytes ${only.start}-${only.end - 1}/${image.size}`, 'content-type': CONTENT_TYPE, 'content-length': only.end - only.start },
      parts: [only]
    }
  }
  const separator = boundary()
  const layout = multipartLayout(range.ranges, image.size, CONTENT_TYPE, separator)
  return {
    kind: 'body',
    status: 206,
    headers: { ...headers, 'content-type': `multipart/byteranges; boundary=${separator}`, 'content-length': layout.length },
    parts: range.ranges.map((r, i) => ({ head: layout.heads[i]!, ...r })),
    tail: layout.tail
  }
}

/**
 * Writes the parts of a planned body after the status line and headers, with
 * backpressure. Rejects when the image cannot be read or the client has gone;
 * the caller then destroys the response.
 */
export async function writeImageBody (
  res: ServerResponse, writer: ImageWriter, image: ComposedImage, parts: readonly BodyPart[], tail?: Buffer
): Promise<void> {
  for (const part of parts) {
    if (part.head !== undefined) res.write(part.head)
    await writer.writeTo(image, res, part.start, part.end)
  }
  if (tail !== undefined) res.write(tail)
  res.end()
}
