import type { FastifyInstance } from 'fastify'
import { isoRoute } from '../shared.ts'

export default async function byApiKeyRoutes (fastify: FastifyInstance) {
  isoRoute(fastify, { route: 'byapikey', url: '/byapikey/:apiKey/:version/:arch/:filename', param: 'apiKey', metricsHandler: '/byapikey/:token', credentialFrom: apiKey => ({ apiKey }) })
}
