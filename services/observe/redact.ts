export const REDACTED = '[REDACTED]'

/** Path segments after which the next segment is a credential (a token, an API key, a short-link code). */
const SECRET_ROUTES = new Set(['bytoken', 'byapikey', 's'])
/** Query keys that carry credentials, compared after decoding ("api%5Fkey" is "api_key"). */
const SECRET_KEYS = /^(api_key|image_token|token|access_token|authorization|password|secret)$/
/** Three base64 parts joined by dots: a JWT wherever it appears. */
const JWT_LIKE = /^[A-Za-z0-9_+/-]{4,}=*\.[A-Za-z0-9_+/-]{4,}=*\.[A-Za-z0-9_+/=-]*$/
const ABSOLUTE_FORM = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i

function decode (text: string): string {
  // Repeatedly: a double-encoded "%252F" must not hide a separator.
  let current = text
  for (let i = 0; i < 3; i++) {
    let next: string
    try {
      next = decodeURIComponent(current)
    } catch {
      next = current.replace(/%([0-9a-f]{2})/gi, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)))
    }
    if (next === current) break
    current = next
  }
  return current
}

function redactPath (path: string): string {
  const segments = decode(path).split('/')
  for (let i = 0; i < segments.length; i++) {
    if (SECRET_ROUTES.has(segments[i]!.toLowerCase()) && i + 1 < segments.length && segments[i + 1] !== '') {
      segments[i + 1] = REDACTED
      i++
    } else if (JWT_LIKE.test(segments[i]!)) {
      segments[i] = REDACTED
    }
  }
  return segments.join('/')
}

function redactQuery (query: string): string {
  return query.split('&').map(pair => {
    const eq = pair.indexOf('=')
    const key = eq === -1 ? pair : pair.slice(0, eq)
    const value = eq === -1 ? '' : pair.slice(eq + 1)
    const name = decode(key.replace(/\+/g, ' ')).trim().toLowerCase()
    if (SECRET_KEYS.test(name) || JWT_LIKE.test(decode(value))) return `${key}=${REDACTED}`
    return pair
  }).join('&')
}

/**
 * A request target fit for logs, redacted by what it means rather than how it
 * is spelled: the absolute form, any case, doubled slashes and percent-encoding
 * (of separators and of key names) all reach the same decision. Credentials in
 * paths (/bytoken/, /byapikey/, /s/ and anything shaped like a JWT) and in
 * query values are replaced.
 */
export function redactUrl (url: string): string {
  let target = url
  const absolute = ABSOLUTE_FORM.exec(target)
  if (absolute !== null) target = target.slice(absolute[0].length)
  const hash = target.indexOf('#')
  if (hash !== -1) target = target.slice(0, hash)
  const question = target.indexOf('?')
  const path = question === -1 ? target : target.slice(0, question)
  const query = question === -1 ? undefined : target.slice(question + 1)
  return `${redactPath(path)}${query !== undefined ? `?${redactQuery(query)}` : ''}`
}
