import fp from 'fastify-plugin'
import { join } from 'node:path'
import { ShortLinks } from '../services/short-links.ts'

declare module 'fastify' {
  interface FastifyInstance {
    shortLinks: ShortLinks
  }
}

export const SHORT_LINKS_FILE = 'short-links.json'

export default fp(async function shortLinksPlugin (fastify) {
  fastify.decorate('shortLinks', await ShortLinks.open(join(fastify.config.dataDir, SHORT_LINKS_FILE)))
}, { name: 'short-links', fastify: '5.x', dependencies: ['config'] })
