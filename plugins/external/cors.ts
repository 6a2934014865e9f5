import fp from 'fastify-plugin'
import cors from '@fastify/cors'

/** Only image and boot-artifact routes are cross-origin resources. */
const CORS_PREFIXES = ['/byid/', '/bytoken/', '/byapikey/', '/images/', '/boot-artifacts/', '/s/']

export default fp(async function corsPlugin (fastify) {
  const allowed = fastify.config.allowedDomains
  if (allowed.length === 0) return
  const any = allowed.includes('*')
  await fastify.register(cors, {
    hook: 'onRequest',
    delegator (request, callback) {
      const path = (request.url ?? '').split('?')[0]!
      if (!CORS_PREFIXES.some(prefix => path.startsWith(prefix))) {
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
    const path = request.url.split('?')[0]!
    if (CORS_PREFIXES.some(prefix => path.startsWith(prefix))) reply.header('vary', 'Origin')
  })
}, { name: 'cors', fastify: '5.x', dependencies: ['config'] })
