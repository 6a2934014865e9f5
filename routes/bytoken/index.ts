import type { FastifyInstance } from 'fastify'
import { imageIdFromJwt } from '../../services/images/credentials.ts'
import { isoRoute } from '../shared.ts'

export default async function byTokenRoutes (fastify: FastifyInstance) {
  isoRoute(fastify, { route: 'bytoken', url: '/bytoken/:token/:version/:arch/:filename', param: 'token', imageId: imageIdFromJwt, credentialFrom: token => ({ token }) })
}
