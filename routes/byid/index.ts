import type { FastifyInstance } from 'fastify'
import { isoRoute } from '../shared.ts'
import { UUID } from '../schemas.ts'

export default async function byIdRoutes (fastify: FastifyInstance) {
  isoRoute(fastify, { route: 'byid', url: '/byid/:imageId/:version/:arch/:filename', param: 'imageId', metricsHandler: '/byid/:token', pattern: UUID })
}
