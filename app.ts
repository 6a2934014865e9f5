import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './services/config.ts'
import { DomainError } from './services/errors.ts'
import configPlugin from './plugins/config.ts'
import readinessPlugin from './plugins/readiness.ts'
import metricsPlugin, { type MetricsOptions } from './plugins/metrics.ts'
import plainHttpPlugin from './plugins/plain-http.ts'
import underPressurePlugin from './plugins/under-pressure.ts'
import corsPlugin from './plugins/cors.ts'
import limiterPlugin from './plugins/limiter.ts'
import imageStorePlugin, { type ImageStoreOptions } from './plugins/image-store.ts'
import assistedClientPlugin from './plugins/assisted-client.ts'
import sendImagePlugin from './plugins/send-image.ts'
import shortLinksPlugin from './plugins/short-links.ts'
import probeRoutes from './routes/probes/index.ts'
import byIdRoutes from './routes/byid/index.ts'
import byTokenRoutes from './routes/bytoken/index.ts'
import byApiKeyRoutes from './routes/byapikey/index.ts'
import imagesRoutes from './routes/images/index.ts'
import bootArtifactRoutes from './routes/boot-artifacts/index.ts'
import shortLinkRoutes from './routes/short-links/index.ts'

export interface AppOptions {
  config: Config
  imageStore?: ImageStoreOptions
  metrics?: MetricsOptions
}

/** The root plugin: error and 404 handling, every decorator, then the routes. */
export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  // Handlers first: route plugins inherit the handlers in force when they are registered.
  fastify.setErrorHandler(function errorHandler (error: FastifyError | DomainError, request, reply) {
    if (error instanceof DomainError) {
      if (error.statusCode >= 500) request.log.error({ code: error.code, reason: error.message }, 'request failed')
      return reply.code(error.statusCode).headers(error.headers).send({ code: error.code, message: error.message })
    }
    const status = error.statusCode ?? 500
    if ('validation' in error && error.validation !== undefined) {
      return reply.code(400).send({ code: 'BAD_REQUEST', message: error.message })
    }
    if (status >= 400 && status < 500) {
      return reply.code(status).send({ code: error.code ?? 'BAD_REQUEST', message: error.message })
    }
    request.log.error({ err: error }, 'unexpected error')
    return reply.code(status >= 500 && status < 600 ? status : 500).send({ code: 'INTERNAL', message: 'internal error' })
  })

  fastify.setNotFoundHandler(function notFound (request, reply) {
    return reply.code(404).send({ code: 'NOT_FOUND', message: 'no such resource' })
  })

  await fastify.register(configPlugin, { config: opts.config })
  await fastify.register(readinessPlugin)
  await fastify.register(metricsPlugin, opts.metrics ?? {})
  await fastify.register(plainHttpPlugin)
  await fastify.register(corsPlugin)
  await fastify.register(underPressurePlugin)
  await fastify.register(limiterPlugin)
  await fastify.register(imageStorePlugin, opts.imageStore ?? {})
  await fastify.register(assistedClientPlugin)
  await fastify.register(sendImagePlugin)
  await fastify.register(shortLinksPlugin)

  await fastify.register(probeRoutes)
  await fastify.register(byIdRoutes)
  await fastify.register(byTokenRoutes)
  await fastify.register(byApiKeyRoutes)
  await fastify.register(imagesRoutes)
  await fastify.register(bootArtifactRoutes)
  await fastify.register(shortLinkRoutes)

}

/** The app as an encapsulation-free plugin, for server.ts and the tests. */
export const appPlugin = fp(app, { name: 'app', fastify: '5.x' })
