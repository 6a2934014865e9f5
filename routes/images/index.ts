import type { FastifyInstance } from 'fastify'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { allowOnlyGetAndHead, clientSignal, credentialSources, sendServed } from '../shared.ts'
import { imageIdParams, imageRouteResponses, isoQuery, osImageQuery } from '../schemas.ts'

// Upstream's handler labels.
const LONG = '/images/:imageID'
const PXE_INITRD = '/images/:imageID/pxe-initrd'
const ADDRSIZE = '/images/:imageID/s390x-initrd-addrsize'

export default async function imagesRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<JsonSchemaToTsProvider>()

  /** Deprecated long form of the ISO routes. */
  app.get('/images/:imageId', {
    schema: { params: imageIdParams, querystring: isoQuery, response: imageRouteResponses },
    config: { limited: true, imageRoute: true, cors: true, metricsHandler: LONG }
  }, async function downloadImage (request, reply) {
    const { version, type, arch = 'x86_64' } = request.query
    await sendServed(reply, await fastify.images.iso({
      route: 'images', imageId: request.params.imageId, version, arch, type, ...credentialSources(request), signal: clientSignal(reply)
    }))
  })
  allowOnlyGetAndHead(fastify, '/images/:imageId', { metricsHandler: LONG })

  app.get('/images/:imageId/pxe-initrd', {
    schema: { params: imageIdParams, querystring: osImageQuery, response: imageRouteResponses },
    config: { limited: true, plainHttp: true, imageRoute: true, cors: true, metricsHandler: PXE_INITRD }
  }, async function downloadPxeInitrd (request, reply) {
    await sendServed(reply, await fastify.images.pxeInitrd({
      imageId: request.params.imageId, version: request.query.version, arch: request.query.arch ?? 'x86_64', ...credentialSources(request), signal: clientSignal(reply)
    }))
  })
  allowOnlyGetAndHead(fastify, '/images/:imageId/pxe-initrd', { plainHttp: true, metricsHandler: PXE_INITRD })

  app.get('/images/:imageId/s390x-initrd-addrsize', {
    schema: { params: imageIdParams, querystring: osImageQuery, response: imageRouteResponses },
    config: { limited: true, imageRoute: true, cors: true, metricsHandler: ADDRSIZE }
  }, async function downloadAddrsize (request, reply) {
    await sendServed(reply, await fastify.images.addrsize({
      imageId: request.params.imageId, version: request.query.version, ...credentialSources(request), signal: clientSignal(reply)
    }))
  })
  allowOnlyGetAndHead(fastify, '/images/:imageId/s390x-initrd-addrsize', { metricsHandler: ADDRSIZE })
}
