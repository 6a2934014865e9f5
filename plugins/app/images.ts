import fp from 'fastify-plugin'
import { ImageRequests } from '../../services/images/image-requests.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** What the image routes serve: customized ISOs with their short links, PXE initrds, boot artifacts. */
    images: ImageRequests
  }
}

export default fp(async function imagesPlugin (fastify) {
  fastify.decorate('images', new ImageRequests({
    store: fastify.imageStore,
    source: fastify.infraEnvSource,
    admit: credential => fastify.admitCredential(credential),
    resolveLink: async code => await fastify.shortLinks.resolve(code),
    mintLink: (target, expires) => fastify.mintShortLink(target, expires),
    baseUrl: fastify.config.imageServiceBaseUrl,
    linkTtlMs: fastify.config.shortLinkTtlSeconds * 1000
  }))
}, { name: 'images', fastify: '5.x', dependencies: ['config', 'image-store', 'assisted-client', 'short-links', 'tokens'] })
