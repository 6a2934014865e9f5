import type { FastifyInstance } from 'fastify'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { allowOnlyGetAndHead, clientSignal, sendServed } from '../shared.ts'
import { imageRouteResponses, shortLinkParams } from '../schemas.ts'

const URL = '/s/:code/:filename'

/** Short links: the same bytes, headers and upstream calls as the long URL they stand for. */
export default async function shortLinkRoutes (fastify: FastifyInstance) {
  fastify.withTypeProvider<JsonSchemaToTsProvider>().get(URL, {
    schema: { params: shortLinkParams, response: imageRouteResponses },
    config: { limited: true, imageRoute: true, cors: true, metricsHandler: '/s/:code' }
  }, async function downloadByShortLink (request, reply) {
    await sendServed(reply, await fastify.images.shortLink({ code: request.params.code, filename: request.params.filename, signal: clientSignal(reply) }))
  })
  allowOnlyGetAndHead(fastify, URL, { metricsHandler: '/s/:code' })
}
