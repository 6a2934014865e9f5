import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './services/config.ts'
import configPlugin from './plugins/app/config.ts'
import errorsPlugin from './plugins/app/errors.ts'
import metricsPlugin, { type MetricsOptions } from './plugins/external/metrics.ts'
import requestLogPlugin from './plugins/app/request-log.ts'
import plainHttpPlugin from './plugins/app/plain-http.ts'
import underPressurePlugin from './plugins/external/under-pressure.ts'
import corsPlugin from './plugins/external/cors.ts'
import limiterPlugin from './plugins/app/limiter.ts'
import imageStorePlugin, { type ImageStoreOptions } from './plugins/app/image-store.ts'
import assistedClientPlugin from './plugins/app/assisted-client.ts'
import sendImagePlugin from './plugins/app/send-image.ts'
import shortLinksPlugin from './plugins/app/short-links.ts'
import tokensPlugin from './plugins/external/tokens.ts'
import imagesPlugin from './plugins/app/images.ts'
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

/** The root plugin: configuration, error and 404 handling, every decorator, then the routes. */
export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  await fastify.register(configPlugin, { config: opts.config })
  // Before any route: routes take the error and not-found handlers in force when they are registered.
  await fastify.register(errorsPlugin)
  await fastify.register(requestLogPlugin)
  await fastify.register(metricsPlugin, opts.metrics ?? {})
  await fastify.register(plainHttpPlugin)
  await fastify.register(corsPlugin)
  await fastify.register(underPressurePlugin)
  await fastify.register(limiterPlugin)
  await fastify.register(imageStorePlugin, opts.imageStore ?? {})
  await fastify.register(assistedClientPlugin)
  await fastify.register(sendImagePlugin)
  await fastify.register(shortLinksPlugin)
  await fastify.register(tokensPlugin)
  await fastify.register(imagesPlugin)

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
