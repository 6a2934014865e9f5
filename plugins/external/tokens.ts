import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import { Counter } from 'prom-client'
import type { Credential } from '../../services/upstream/infra-env-source.ts'
import { METRIC_PREFIX } from '../../services/observe/metrics.ts'
import { isRefusedToken, LOCAL_AUTH_CLAIM, TOKEN_REFUSALS, TokenCheck, type AdmittedToken } from '../../services/images/tokens.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Admits a request's credential, or throws a 401 TOKEN_REFUSED before anything is asked upstream. */
    admitCredential (credential: Credential | undefined): AdmittedToken
  }
}

/** Verified tokens kept, so a BMC's thousands of Range requests verify its token once. */
const VERIFIED_TOKENS_CACHED = 1000

/**
 * Tokens at the door. With assisted-service's public key (EC_PUBLIC_KEY_PEM),
 * @fastify/jwt verifies local-authentication tokens: ES256 only, `exp` and
 * `nbf` within the clock tolerance, an `infra_env_id` claim.
 */
export default fp(async function tokensPlugin (fastify) {
  const { publicKeyPem, clockToleranceSeconds } = fastify.config.tokens
  const clockToleranceMs = clockToleranceSeconds * 1000
  let verifyLocal: ((token: string) => Record<string, unknown>) | undefined
  if (publicKeyPem !== undefined) {
    await fastify.register(fastifyJwt, {
      secret: { public: publicKeyPem },
      verify: { algorithms: ['ES256'], requiredClaims: [LOCAL_AUTH_CLAIM], clockTolerance: clockToleranceMs, cache: VERIFIED_TOKENS_CACHED }
    })
    verifyLocal = token => fastify.jwt.verify<Record<string, unknown>>(token)
  }
  const check = new TokenCheck({ clockToleranceMs, ...(verifyLocal !== undefined ? { verifyLocal } : {}) })
  const refused = new Counter({
    name: `${METRIC_PREFIX}tokens_refused_total`,
    help: 'Tokens refused before any upstream call, by reason',
    labelNames: ['reason'],
    registers: [fastify.metricsRegistry]
  })
  for (const reason of TOKEN_REFUSALS) refused.labels(reason).inc(0)
  const log = fastify.log.child({ component: 'tokens' })
  log.info(check.verifies ? 'API keys are verified with EC_PUBLIC_KEY_PEM (ES256)' : 'no EC_PUBLIC_KEY_PEM: tokens are forwarded unverified; expired ones are refused')

  fastify.decorate('admitCredential', function admitCredential (credential: Credential | undefined): AdmittedToken {
    try {
      return check.admit(credential)
    } catch (error) {
      if (isRefusedToken(error)) {
        refused.labels(error.reason).inc()
        // The credential kind, never the token.
        log.info({ reason: error.reason, credential: credential?.kind }, 'token refused')
      }
      throw error
    }
  })
}, { name: 'tokens', fastify: '5.x', dependencies: ['config', 'metrics'] })
