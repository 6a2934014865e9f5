/** A byte range, end exclusive. */
export interface ByteRange { start: number, end: number }

export type RangeRequest =
  | { kind: 'none' }
  | { kind: 'ranges', ranges: ByteRange[] }
  | { kind: 'unsatisfiable' }

const MAX_RANGES = 100

/**
 * Parses a `Range` header (RFC 9110 §14.2) against a representation of `size`
 * bytes. A syntactically invalid header is ignored (`none`), as the RFC
 * allows; an end past the last byte is clamped; overlapping ranges merge.
 */
export function parseRange (header: string | undefined, size: number): RangeRequest {
  if (header === undefined) return { kind: 'none' }
  const match = /^\s*bytes\s*=\s*(.+)$/i.exec(header)
  if (match === null) return { kind: 'none' }
  const specs = match[1]!.split(',').map(s => s.trim()).filter(s => s !== '')
  if (specs.length === 0 || specs.length > MAX_RANGES) return { kind: 'none' }
  const ranges: ByteRange[] = []
  for (const spec of specs) {
    const m = /^(\d*)\s*-\s*(\d*)$/.exec(spec)
    if (m === null || (m[1] === '' && m[2] === '')) return { kind: 'none' }
    if (m[1] === '') {
      const suffix = Number(m[2])
      if (suffix > 0 && size > 0) ranges.push({ start: Math.max(0, size - suffix), end: size })
      continue
    }
    const start = Number(m[1])
    const last = m[2] === '' ? size - 1 : Number(m[2])
    if (m[2] !== '' && last < start) return { kind: 'none' }
    if (start < size) ranges.push({ start, end: Math.min(last, size - 1) + 1 })
  }
  if (ranges.length === 0) return { kind: 'unsatisfiable' }
  if (ranges.length === 1) return { kind: 'ranges', ranges }
  const sorted = [...ranges].sort((a, b) => a.start - b.start)
  const merged: ByteRange[] = [sorted[0]!]
  for (const r of sorted.slice(1)) {
    const last = merged[merged.length - 1]!
    if (r.start <= last.end) last.end = Math.max(last.end, r.end)
    else merged.push({ ...r })
  }
  return { kind: 'ranges', ranges: merged }
}

function parseDate (value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const time = Date.parse(value)
  return Number.isNaN(time) ? undefined : Math.floor(time / 1000)
}

function etagList (value: string): string[] {
  return value.split(',').map(s => s.trim()).filter(s => s !== '')
}

const weak = (tag: string) => tag.replace(/^W\//, '')

export interface Validators { etag: string, lastModified: Date }
type Headers = Record<string, string | string[] | undefined>

function header (headers: Headers, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

/** RFC 9110 §13.2.2 precondition evaluation, for GET and HEAD. */
export function evaluatePreconditions (headers: Headers, v: Validators): 'proceed' | 304 | 412 {
  const modified = Math.floor(v.lastModified.getTime() / 1000)
  const ifMatch = header(headers, 'if-match')
  if (ifMatch !== undefined) {
    const tags = etagList(ifMatch)
    if (!tags.includes('*') && !tags.some(tag => !tag.startsWith('W/') && tag === v.etag)) return 412
  } else {
    const since = parseDate(header(headers, 'if-unmodified-since'))
    if (since !== undefined && modified > since) return 412
  }
  const ifNoneMatch = header(headers, 'if-none-match')
  if (ifNoneMatch !== undefined) {
    const tags = etagList(ifNoneMatch)
    if (tags.includes('*') || tags.some(tag => weak(tag) === weak(v.etag))) return 304
  } else {
    const since = parseDate(header(headers, 'if-modified-since'))
    if (since !== undefined && modified <= since) return 304
  }
  return 'proceed'
}

/** `If-Range`: the Range applies only if the validator still matches (strong ETag, or the exact date). */
export function ifRangeMatches (headers: Headers, v: Validators): boolean {
  const value = header(headers, 'if-range')
  if (value === undefined) return true
  const trimmed = value.trim()
  if (trimmed.startsWith('"') || trimmed.startsWith('W/')) return !trimmed.startsWith('W/') && trimmed === v.etag
  const date = parseDate(trimmed)
  return date !== undefined && date === Math.floor(v.lastModified.getTime() / 1000)
}

/** The parts of a multipart/byteranges body around each range, with the total length. */
export function multipartLayout (ranges: readonly ByteRange[], size: number, contentType: string, boundary: string) {
  const heads = ranges.map((r, i) => Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${contentType}\r\nContent-Range: bytes ${r.start}-${r.end - 1}/${size}\r\n\r\n`))
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`)
  const length = heads.reduce((n, h) => n + h.length, 0) + ranges.reduce((n, r) => n + r.end - r.start, 0) + tail.length
  return { heads, tail, length }
}
