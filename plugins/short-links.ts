import fp from 'fastify-plugin'
import { join } from 'node:path'
import { Counter } from 'prom-client'
import { ShortLinks, type LinkTarget } from '../services/short-links.ts'
import { METRIC_PREFIX } from './metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    shortLinks: ShortLinks
    /**
     * The short-link code for a target, or undefined when the link store
     * cannot be written: the image is then served without a Link header.
     */
    mintShortLink (target: LinkTarget, expires: number): Promise<string | undefined>
  }
}

export const SHORT_LINKS_FILE = 'short-links.json'

export default fp(async function shortLinksPlugin (fastify) {
  const links = await ShortLinks.open(join(fastify.config.dataDir, SHORT_LINKS_FILE))
  const failures = new Counter({ name: `${METRIC_PREFIX}short_link_store_failures_total`, help: 'Short links not minted because their store could not be written', registers: [fastify.metricsRegistry] })
  const log = fastify.log.child({ component: 'short-links' })
  let failing = false
  fastify.decorate('shortLinks', links)
  fastify.decorate('mintShortLink', async function mintShortLink (target: LinkTarget, expires: number) {
    try {
      const code = await links.mint(target, expires)
      if (failing) log.info('the short-link store is writable again')
      failing = false
      return code
    } catch (err) {
      failures.inc()
      // Once per outage, not once per request.
      if (!failing) log.error({ error: (err as Error).message }, 'cannot store short links; serving images without a Link header')
      failing = true
      return undefined
    }
  })
}, { name: 'short-links', fastify: '5.x', dependencies: ['config', 'metrics'] })
