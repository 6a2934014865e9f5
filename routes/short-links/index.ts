import type { FastifyInstance, FastifyRequest } from 'fastify'
import { ShortLinkNotFound, ShortLinkStoreUnavailable } from '../../services/errors.ts'
import { ISO_FILENAMES } from '../../services/images/image-requests.ts'
import { allowOnlyGetAndHead, serveIso } from '../shared.ts'

const URL = '/s/:code/:filename'

/** Short links: the same bytes, headers and upstream calls as the long URL they stand for. */
export default async function shortLinkRoutes (fastify: FastifyInstance) {
  fastify.get(URL, {
    schema: { params: { type: 'object', required: ['code', 'filename'], properties: { code: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' }, filename: { type: 'string' } } } },
    config: { limited: true }
  }, async function downloadByShortLink (request: FastifyRequest<{ Params: { code: string, filename: string } }>, reply) {
    let target
    try {
      target = await fastify.shortLinks.resolve(request.params.code)
    } catch {
      throw new ShortLinkStoreUnavailable()
    }
    if (target === undefined || ISO_FILENAMES.get(request.params.filename) !== target.type) {
      throw new ShortLinkNotFound()
    }
    await serveIso(fastify, reply, target)
  })
  allowOnlyGetAndHead(fastify, URL)
}
