import type { FastifyInstance, FastifyRequest } from 'fastify'
import { allowOnlyGetAndHead, sendServed } from '../shared.ts'

type Req = FastifyRequest<{ Params: { artifact: string }, Querystring: { version?: string, arch?: string } }>

/** Raw kernel, rootfs and generic.ins: no auth, no upstream calls, never queued, cacheable. */
export default async function bootArtifactRoutes (fastify: FastifyInstance) {
  fastify.get('/boot-artifacts/:artifact', {
    schema: { querystring: { type: 'object', properties: { version: { type: 'string' }, arch: { type: 'string' } } } },
    config: { plainHttp: true }
  }, async function downloadBootArtifact (request: Req, reply) {
    const { version, arch = 'x86_64' } = request.query
    await sendServed(reply, await fastify.images.bootArtifact({ artifact: request.params.artifact, arch, ...(version !== undefined ? { version } : {}) }))
  })
  allowOnlyGetAndHead(fastify, '/boot-artifacts/:artifact', { plainHttp: true })
}
