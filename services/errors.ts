/**
 * A failure the client can be told about: it carries the HTTP status to answer
 * with and a stable machine-readable code. Anything else thrown is a bug and
 * becomes a 500 with no details.
 */
export class DomainError extends Error {
  readonly statusCode: number
  readonly code: string
  readonly headers: Record<string, string>

  constructor (statusCode: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message)
    this.name = 'DomainError'
    this.statusCode = statusCode
    this.code = code
    this.headers = headers
  }
}

export function badRequest (code: string, message: string): DomainError {
  return new DomainError(400, code, message)
}

export function notFound (code: string, message: string): DomainError {
  return new DomainError(404, code, message)
}

export function unavailable (code: string, message: string, retryAfterSeconds: number): DomainError {
  return new DomainError(503, code, message, { 'retry-after': String(retryAfterSeconds) })
}
