const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * `attachment; filename=…` per RFC 6266: a plain token when the name is one
 * (every name we build from a validated id is), else a quoted string, plus an
 * RFC 8187 `filename*` when it is not ASCII. Nothing in the name can end the
 * parameter or the header.
 */
export function contentDisposition (filename: string): string {
  if (TOKEN.test(filename)) return `attachment; filename=${filename}`
  const ascii = filename.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '\\$&')
  const value = `attachment; filename="${ascii}"`
  if (/^[\x20-\x7e]*$/.test(filename)) return value
  return `${value}; filename*=UTF-8''${encodeURIComponent(filename).replace(/['()*]/g, c => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`
}
