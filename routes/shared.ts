import type { FastifyContextConfig, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { imageRouteResponses, isoPathParams } from './schemas.ts'
import { ISO_FILENAMES, type Served } from '../services/images/image-requests.ts'
import { ClientGone, TokenNamesNoImage, UnknownFilename } from '../services/errors.ts'
import type { LinkTarget } from '../services/links/short-links.ts'
import { pickCredential } from '../services/images/credentials.ts'
import type { Credential } from '../services/upstream/infra-env-source.ts'
import { errorBody } from '../plugins/app/errors.ts'

/** Aborted when the client goes away before the response is complete: cancels upstream calls. */
export function clientSignal (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort(new ClientGone()) })
  return controller.signal
}

/** The credential of a request, by the precedence of api.md. */
function pickRequestCredential (request: FastifyRequest, path: { apiKey?: string, token?: string }): Credential | undefined {
  return pickCredential({
    ...(path.apiKey !== undefined ? { pathApiKey: path.apiKey } : {}),
    ...(path.token !== undefined ? { pathToken: path.token } : {}),
    query: request.query as Record<string, unknown>,
    ...(typeof request.headers.authorization === 'string' ? { authorization: request.headers.authorization } : {})
  })
}

export interface AdmittedCredential {
  credential?: Credential
  /** The image id the credential's token names, if it names one. */
  imageId?: string
  /** When the credential's token expires, in milliseconds. */
  expiresAt?: number
}

/** The request's credential, admitted (fastify.admitCredential): a refused token is a 401 here, before any upstream call. */
export function requestCredential (request: FastifyRequest, path: { apiKey?: string, token?: string } = {}): AdmittedCredential {
  const credential = pickRequestCredential(request, path)
  return { ...request.server.admitCredential(credential), ...(credential !== undefined ? { credential } : {}) }
}

/** Sends what a service call returned, advertising its short link (`Link: <...>; rel="alternate"`) when it has one. */
export async function sendServed (reply: FastifyReply, served: Served): Promise<void> {
  if (served.link !== undefined) reply.header('link', `<${served.link}>; rel="alternate"`)
  await reply.sendImage(served.image, {
    filename: served.filename,
    lastModified: served.lastModified,
    ...(served.cacheControl !== undefined ? { cacheControl: served.cacheControl } : {})
  })
}

/** Other methods on an image URL: 405 with Allow (upstream served the ISO to any method). */
export function allowOnlyGetAndHead (fastify: FastifyInstance, url: string, config: Pick<FastifyContextConfig, 'plainHttp' | 'metricsHandler'> = {}): void {
  const methods = ['POST', 'PUT', 'DELETE', 'PATCH']
  // With CORS on, OPTIONS belongs to the preflight handler.
  if (fastify.config.allowedDomains.length === 0) methods.push('OPTIONS')
  fastify.route({
    method: methods,
    url,
    config,
    handler: async function methodNotAllowed (_request, reply) {
      return await reply.code(405).header('allow', 'GET, HEAD').send(errorBody('METHOD_NOT_ALLOWED', 'only GET and HEAD are supported'))
    }
  })
}

export interface IsoRouteSpec {
  route: LinkTarget['route']
  url: string
  /** Name of the path parameter that identifies the image (an id, or a token naming it). */
  param: string
  /** Upstream's `handler` label for the route. */
  metricsHandler: string
  pattern?: string
  /** The credential the parameter carries (a token: the image id is its claim); absent: the parameter is the id. */
  credentialFrom?: (value: string) => { apiKey?: string, token?: string }
}

/** Serves a customized ISO with its short link, which lives as long as the credential it holds. */
export async function serveIso (fastify: FastifyInstance, reply: FastifyReply, target: LinkTarget, credentialExpiresAt?: number): Promise<void> {
  await sendServed(reply, await fastify.images.iso(target, { signal: clientSignal(reply), ...(credentialExpiresAt !== undefined ? { credentialExpiresAt } : {}) }))
}

/** Registers one of the short ISO routes (byid, bytoken, byapikey): they differ only in how the id is found. */
export function isoRoute (fastify: FastifyInstance, spec: IsoRouteSpec): void {
  fastify.withTypeProvider<JsonSchemaToTsProvider>().get(spec.url, {
    schema: { params: isoPathParams(spec.param, spec.pattern), response: imageRouteResponses },
    config: { limited: true, imageRoute: true, metricsHandler: spec.metricsHandler }
  }, async function downloadIso (request, reply) {
    const { version, arch, filename } = request.params
    const value = request.params[spec.param]!
    const type = ISO_FILENAMES.get(filename)
    if (type === undefined) throw new UnknownFilename(filename)
    const { credential, imageId: claimed, expiresAt } = requestCredential(request, spec.credentialFrom?.(value) ?? {})
    const imageId = spec.credentialFrom !== undefined ? claimed : value
    if (imageId === undefined) throw new TokenNamesNoImage()
    const target: LinkTarget = { route: spec.route, imageId, version, arch, type, ...(credential !== undefined ? { credential } : {}) }
    await serveIso(fastify, reply, target, expiresAt)
  })
  allowOnlyGetAndHead(fastify, spec.url, { metricsHandler: spec.metricsHandler })
}
