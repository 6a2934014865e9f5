import type { FastifyInstance } from 'fastify'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { ShortLinkNotFound, ShortLinkStoreUnavailable } from '../../services/errors.ts'
import { ISO_FILENAMES } from '../../services/images/image-requests.ts'
import { allowOnlyGetAndHead, serveIso } from '../shared.ts'
import { imageRouteResponses, shortLinkParams } from '../schemas.ts'

const URL = '/s/:code/:filename'

/** Short links: the same bytes, headers and upstream calls as the long URL they stand for. */
export default async function shortLinkRoutes (fastify: FastifyInstance) {
  fastify.withTypeProvider<JsonSchemaToTsProvider>().get(URL, {
    schema: { params: shortLinkParams, response: imageRouteResponses },
    config: { limited: true, imageRoute: true, metricsHandler: '/s/:code' }
  }, async function downloadByShortLink (request, reply) {
    let target
    try {
      target = await fastify.shortLinks.resolve(request.params.code)
    } catch {
      throw new ShortLinkStoreUnavailable()
    }
    if (target === undefined || ISO_FILENAMES.get(request.params.filename) !== target.type) throw new ShortLinkNotFound()
    // The same door as the long URL: a link whose token expired answers 401.
    const { expiresAt } = fastify.admitCredential(target.credential)
    await serveIso(fastify, reply, target, expiresAt)
  })
  allowOnlyGetAndHead(fastify, URL, { metricsHandler: '/s/:code' })
}
