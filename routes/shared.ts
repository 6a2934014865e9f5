import type { FastifyContextConfig, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { imageRouteResponses, isoPathParams } from './schemas.ts'
import type { Served } from '../services/images/image-requests.ts'
import { ClientGone } from '../services/errors.ts'
import type { LinkTarget } from '../services/links/short-links.ts'
import { errorBody } from '../plugins/app/errors.ts'

/** Aborted when the client goes away before the response is complete: cancels upstream calls. */
export function clientSignal (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort(new ClientGone()) })
  return controller.signal
}

/** Where the request's credential may be, for `fastify.images` to pick and admit. */
export function credentialSources (request: FastifyRequest): { query: Record<string, unknown>, authorization: string | undefined } {
  return { query: request.query as Record<string, unknown>, authorization: request.headers.authorization }
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

/** Registers one of the short ISO routes (byid, bytoken, byapikey): they differ only in how the id is found. */
export function isoRoute (fastify: FastifyInstance, spec: IsoRouteSpec): void {
  fastify.withTypeProvider<JsonSchemaToTsProvider>().get(spec.url, {
    schema: { params: isoPathParams(spec.param, spec.pattern), response: imageRouteResponses },
    config: { limited: true, imageRoute: true, cors: true, metricsHandler: spec.metricsHandler }
  }, async function downloadIso (request, reply) {
    const { version, arch, filename } = request.params
    const value = request.params[spec.param]!
    await sendServed(reply, await fastify.images.iso({
      route: spec.route,
      ...(spec.credentialFrom !== undefined ? { path: spec.credentialFrom(value) } : { imageId: value }),
      version,
      arch,
      filename,
      ...credentialSources(request),
      signal: clientSignal(reply)
    }))
  })
  allowOnlyGetAndHead(fastify, spec.url, { metricsHandler: spec.metricsHandler })
}
