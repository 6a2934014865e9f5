import type { FastifyInstance, FastifyRequest } from 'fastify'
import { ARTIFACTS } from '../../services/images/image-requests.ts'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { allowOnlyGetAndHead, sendServed } from '../shared.ts'
import { artifactParams, imageRouteResponses, osImageQuery } from '../schemas.ts'

/** Upstream labels boot artifacts by their path: `/boot-artifacts/rootfs`; any other name is one label, not one each. */
function metricsHandler (request: FastifyRequest): string {
  const { artifact } = request.params as { artifact?: string }
  return artifact !== undefined && (ARTIFACTS as readonly string[]).includes(artifact) ? `/boot-artifacts/${artifact}` : '/boot-artifacts/:artifact'
}

/** Raw kernel, rootfs and generic.ins: no auth, no upstream calls, never queued, cacheable. */
export default async function bootArtifactRoutes (fastify: FastifyInstance) {
  fastify.withTypeProvider<JsonSchemaToTsProvider>().get('/boot-artifacts/:artifact', {
    schema: { params: artifactParams, querystring: osImageQuery, response: imageRouteResponses },
    config: { plainHttp: true, imageRoute: true, cors: true, metricsHandler }
  }, async function downloadBootArtifact (request, reply) {
    const { version, arch = 'x86_64' } = request.query
    await sendServed(reply, await fastify.images.bootArtifact({ artifact: request.params.artifact, version, arch }))
  })
  allowOnlyGetAndHead(fastify, '/boot-artifacts/:artifact', { plainHttp: true, metricsHandler })
}
