import type { FastifyInstance, FastifyRequest } from 'fastify'
import { TypeInvalid, TypeRequired, VersionRequired } from '../../services/errors.ts'
import type { IsoKind } from '../../services/coreos/customize.ts'
import { allowOnlyGetAndHead, clientSignal, IMAGE_ID, requestCredential, sendServed, serveIso } from '../shared.ts'

interface Query { version?: string, type?: string, arch?: string }
type Req = FastifyRequest<{ Params: { imageId: string }, Querystring: Query }>

const TYPES: readonly string[] = ['full-iso', 'minimal-iso', 'disconnected-iso']
const params = { type: 'object', required: ['imageId'], properties: { imageId: { type: 'string', pattern: IMAGE_ID } } } as const
const query = { type: 'object', properties: { version: { type: 'string' }, type: { type: 'string' }, arch: { type: 'string' } } } as const

export default async function imagesRoutes (fastify: FastifyInstance) {
  /** Deprecated long form of the ISO routes. */
  fastify.get('/images/:imageId', { schema: { params, querystring: query }, config: { limited: true } }, async function downloadImage (request: Req, reply) {
    const { version, type, arch = 'x86_64' } = request.query
    if (version === undefined || version === '') throw new VersionRequired()
    if (type === undefined || type === '') throw new TypeRequired()
    if (!TYPES.includes(type)) throw new TypeInvalid(TYPES.join(', '))
    const credential = requestCredential(request)
    await serveIso(fastify, reply, { route: 'images', imageId: request.params.imageId, version, arch, type: type as IsoKind, ...(credential !== undefined ? { credential } : {}) })
  })
  allowOnlyGetAndHead(fastify, '/images/:imageId')

  fastify.get('/images/:imageId/pxe-initrd', { schema: { params, querystring: query }, config: { limited: true, plainHttp: true } }, async function downloadPxeInitrd (request: Req, reply) {
    const credential = requestCredential(request)
    await sendServed(reply, await fastify.images.pxeInitrd({
      imageId: request.params.imageId, arch: request.query.arch ?? 'x86_64', ...(request.query.version !== undefined ? { version: request.query.version } : {}),
      ...(credential !== undefined ? { credential } : {}), signal: clientSignal(reply)
    }))
  })
  allowOnlyGetAndHead(fastify, '/images/:imageId/pxe-initrd', { plainHttp: true })

  fastify.get('/images/:imageId/s390x-initrd-addrsize', { schema: { params, querystring: query }, config: { limited: true } }, async function downloadAddrsize (request: Req, reply) {
    const credential = requestCredential(request)
    await sendServed(reply, await fastify.images.addrsize({
      imageId: request.params.imageId, ...(request.query.version !== undefined ? { version: request.query.version } : {}),
      ...(credential !== undefined ? { credential } : {}), signal: clientSignal(reply)
    }))
  })
  allowOnlyGetAndHead(fastify, '/images/:imageId/s390x-initrd-addrsize')
}
