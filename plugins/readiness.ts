import fp from 'fastify-plugin'
import { Readiness } from '../services/readiness.ts'

declare module 'fastify' {
  interface FastifyInstance {
    readiness: Readiness
  }
}

export default fp(async function readinessPlugin (fastify) {
  fastify.decorate('readiness', new Readiness())
}, { name: 'readiness', fastify: '5.x' })
