import fp from 'fastify-plugin'
import type { FastifyError, FastifySchemaValidationError } from 'fastify'
import { DomainError } from '../../services/errors.ts'
import type { Config } from '../../services/config.ts'
import { CLIENT_CLOSED_REQUEST } from './response-meter.ts'

/** The one body shape of every error answer. */
export interface ErrorBody { code: string, message: string }

export function errorBody (code: string, message: string): ErrorBody {
  return { code, message }
}

/**
 * One line for a request that fails its schema, naming the first problem
 * (Fastify joins them all): `querystring/type must be one of full-iso, minimal-iso, disconnected-iso`.
 */
export function schemaErrorFormatter (errors: FastifySchemaValidationError[], dataVar: string): Error {
  const first = errors[0]
  const allowed = first?.keyword === 'enum' ? first.params.allowedValues : undefined
  const problem = Array.isArray(allowed) ? `must be one of ${allowed.join(', ')}` : first?.message ?? 'is invalid'
  return new Error(`${dataVar}${first?.instancePath ?? ''} ${problem}`)
}

interface Answer {
  status: number
  /** Seconds for Retry-After. */
  retryAfter?: (config: Config) => number
}

/** Seconds a client waits before asking again for an image that is still being prepared. */
const IMAGE_RETRY_AFTER_SECONDS = 30
const LINK_STORE_RETRY_AFTER_SECONDS = 10
/** A BMC retries a range soon: the origin may be back, or the image prepared again. */
const ORIGIN_RETRY_AFTER_SECONDS = 10

const BAD_REQUEST: Answer = { status: 400 }
const NOT_FOUND: Answer = { status: 404 }
const SERVER_ERROR: Answer = { status: 500 }
const BAD_GATEWAY: Answer = { status: 502 }

/** The HTTP answer to each code of services/errors.ts. */
const ANSWERS: ReadonlyMap<string, Answer> = new Map([
  ['IMG_VERSION_REQUIRED', BAD_REQUEST],
  ['IMG_VERSION_UNKNOWN', BAD_REQUEST],
  ['IMG_KARGS_UNSUPPORTED', BAD_REQUEST],
  ['CPIO_FORMAT', BAD_REQUEST],
  ['IMG_FILENAME', NOT_FOUND],
  ['IMG_BAD_TOKEN', NOT_FOUND],
  ['IMG_BAD_ID', NOT_FOUND],
  ['IMG_VERSION_NOT_FOUND', NOT_FOUND],
  ['IMG_TYPE_NOT_AVAILABLE', NOT_FOUND],
  ['IMG_ARTIFACT_NOT_FOUND', NOT_FOUND],
  ['INFRA_ENV_NOT_FOUND', NOT_FOUND],
  ['SHORT_LINK_NOT_FOUND', NOT_FOUND],
  ['TOKEN_REFUSED', { status: 401 }],
  ['IMG_NOT_READY', { status: 503, retryAfter: () => IMAGE_RETRY_AFTER_SECONDS }],
  ['QUEUE_TIMEOUT', { status: 503, retryAfter: config => Math.max(1, config.requestQueueTimeoutSeconds) }],
  ['SHORT_LINK_STORE_UNAVAILABLE', { status: 503, retryAfter: () => LINK_STORE_RETRY_AFTER_SECONDS }],
  ['IMG_ORIGIN_UNAVAILABLE', { status: 503, retryAfter: () => ORIGIN_RETRY_AFTER_SECONDS }],
  ['IMG_ORIGIN_CHANGED', { status: 503, retryAfter: () => ORIGIN_RETRY_AFTER_SECONDS }],
  ['CLIENT_GONE', { status: CLIENT_CLOSED_REQUEST }],
  ['UPSTREAM_TIMEOUT', { status: 504 }],
  ['UPSTREAM_UNREACHABLE', BAD_GATEWAY],
  ['UPSTREAM_TOO_LARGE', BAD_GATEWAY],
  ['UPSTREAM_BAD_ANSWER', BAD_GATEWAY],
  ['UPSTREAM_BAD_KARGS', BAD_GATEWAY],
  ['UPSTREAM_STATUS', BAD_GATEWAY]
])

/** What to answer for a domain error; codes not listed (an OS image that cannot serve, a format we cannot read) are 500. */
export function answerFor (error: DomainError, config: Config): { status: number, headers: Record<string, string> } {
  const answer = ANSWERS.get(error.code) ?? SERVER_ERROR
  // assisted-service's own 4xx/5xx passes through: a 401 or 404 there is the client's answer here.
  const upstream = error.upstreamStatus
  const status = upstream !== undefined && upstream >= 400 && upstream <= 599 ? upstream : answer.status
  return { status, headers: answer.retryAfter !== undefined ? { 'retry-after': String(answer.retryAfter(config)) } : {} }
}

/**
 * The HTTP edge of errors: domain errors become their status and body, schema
 * failures 400, other client errors keep their status, anything else is a bug
 * (500, logged, no details). Unknown routes get the same body shape.
 */
export default fp(async function errorsPlugin (fastify) {
  fastify.setErrorHandler(function errorHandler (error: FastifyError | DomainError, request, reply) {
    if (error instanceof DomainError) {
      const { status, headers } = answerFor(error, fastify.config)
      if (status >= 500) request.log.error({ code: error.code, reason: error.message }, 'request failed')
      // A client that leaves while queued or while assisted-service answers (a BMC or PXE loader giving up) is no fault here.
      if (error.code === 'CLIENT_GONE') request.log.info({ code: error.code }, 'client disconnected before the response')
      return reply.code(status).headers(headers).send(errorBody(error.code, error.message))
    }
    const status = error.statusCode ?? 500
    if ('validation' in error && error.validation !== undefined) return reply.code(400).send(errorBody('BAD_REQUEST', error.message))
    if (status >= 400 && status < 500) return reply.code(status).send(errorBody(error.code ?? 'BAD_REQUEST', error.message))
    request.log.error({ err: error }, 'unexpected error')
    return reply.code(status >= 500 && status < 600 ? status : 500).send(errorBody('INTERNAL', 'internal error'))
  })

  fastify.setNotFoundHandler(function notFound (_request, reply) {
    return reply.code(404).send(errorBody('NOT_FOUND', 'no such resource'))
  })
}, { name: 'errors', fastify: '5.x', dependencies: ['config'] })
