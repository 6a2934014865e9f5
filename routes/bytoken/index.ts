import type { FastifyInstance } from 'fastify'
import { isoRoute } from '../shared.ts'

export default async function byTokenRoutes (fastify: FastifyInstance) {
  isoRoute(fastify, { route: 'bytoken', url: '/bytoken/:token/:version/:arch/:filename', param: 'token', metricsHandler: '/bytoken/:token', credentialFrom: token => ({ token }) })
}
