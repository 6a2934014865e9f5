import fp from 'fastify-plugin'
import cors from '@fastify/cors'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A cross-origin resource (images, boot artifacts): CORS headers for ALLOWED_DOMAINS. */
    cors?: boolean
  }
}

/** The static start of a route pattern: `/byid/:imageId/...` is `/byid/`. */
function staticPrefix (url: string): string {
  const dynamic = url.search(/[:*]/)
  return dynamic === -1 ? url : url.slice(0, dynamic)
}

export default fp(async function corsPlugin (fastify) {
  const allowed = fastify.config.allowedDomains
  if (allowed.length === 0) return
  const any = allowed.includes('*')
  // A preflight is routed to @fastify/cors's OPTIONS route, not to the resource's: match it by the resource's path.
  const prefixes = new Set<string>()
  fastify.addHook('onRoute', function collectCorsRoutes (route) {
    if (route.config?.cors === true) prefixes.add(staticPrefix(route.url))
  })
  const isCrossOrigin = (url: string): boolean => {
    const path = url.split('?')[0]!
    for (const prefix of prefixes) if (path.startsWith(prefix)) return true
    return false
  }
  await fastify.register(cors, {
    hook: 'onRequest',
    delegator (request, callback) {
      if (!isCrossOrigin(request.url ?? '')) {
        callback(null, { origin: false })
        return
      }
      callback(null, {
        origin: (origin, cb) => cb(null, origin !== undefined && (any || allowed.includes(origin)) ? origin : false),
        methods: ['GET', 'HEAD'],
        allowedHeaders: ['Authorization', 'Content-Type'],
        maxAge: 600,
        preflightContinue: false,
        optionsSuccessStatus: 204,
        strictPreflight: false
      })
    }
  })
  // Set early (not in onSend): image replies are written by hand and skip onSend hooks.
  fastify.addHook('onRequest', async function varyOrigin (request, reply) {
    if (isCrossOrigin(request.url)) reply.header('vary', 'Origin')
  })
}, { name: 'cors', fastify: '5.x', dependencies: ['config'] })
