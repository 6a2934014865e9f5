import fp from 'fastify-plugin'
import { join } from 'node:path'
import { Counter } from 'prom-client'
import { createHash } from 'node:crypto'
import { openLinkStore } from '../../services/links/open-link-store.ts'
import { migrateLegacyLinks, ShortLinks, type LinkTarget } from '../../services/links/short-links.ts'
import { METRIC_PREFIX } from '../../services/observe/metrics.ts'

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

/** The embedded store's directory in DATA_DIR; earlier versions kept one JSON file. */
const SHORT_LINKS_DIR = 'short-links'
const LEGACY_FILE = 'short-links.json'

export default fp(async function shortLinksPlugin (fastify) {
  const { dataDir, redisUrl, shortLinkSecret } = fastify.config
  const store = await openLinkStore({ redisUrl, dir: join(dataDir, SHORT_LINKS_DIR) })
  const links = new ShortLinks(store, shortLinkSecret !== undefined ? createHash('sha256').update(shortLinkSecret).digest() : undefined)
  const failures = new Counter({ name: `${METRIC_PREFIX}short_link_store_failures_total`, help: 'Short links not minted because their store could not be written', registers: [fastify.metricsRegistry] })
  const log = fastify.log.child({ component: 'short-links' })
  let failing = false
  fastify.decorate('shortLinks', links)
  fastify.addHook('onClose', async function closeLinkStore () { await links.close() })
  try {
    const moved = await migrateLegacyLinks(join(dataDir, LEGACY_FILE), store)
    if (moved > 0) log.info({ links: moved }, 'short links moved from short-links.json into the sealed store')
  } catch (err) {
    log.error({ error: (err as Error).message }, 'cannot move the links of short-links.json; they stay unavailable')
  }
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
