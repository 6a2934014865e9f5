import { createDecoder, TokenError } from 'fast-jwt'
import type { Credential } from '../upstream/infra-env-source.ts'
import { type DomainError, TokenRefused } from '../errors.ts'
import { isImageId } from './credentials.ts'
import { BoundedCache } from '../io/bounded-cache.ts'

/** Why a token was refused at the door; the `reason` label of the refusal counter. */
export type TokenRefusal = 'bad_signature' | 'expired' | 'not_yet_valid' | 'malformed' | 'missing_claim'

const REFUSAL_MESSAGES: Readonly<Record<TokenRefusal, string>> = {
  bad_signature: 'the token is not signed by assisted-service\'s key (ES256)',
  expired: 'the token has expired',
  not_yet_valid: 'the token is not valid yet',
  malformed: 'the token is not a readable JWT',
  missing_claim: 'the token names no infra_env_id'
}

export const TOKEN_REFUSALS = Object.keys(REFUSAL_MESSAGES) as TokenRefusal[]

export interface RefusedToken extends DomainError { reason: TokenRefusal }

function refusedToken (reason: TokenRefusal): RefusedToken {
  return Object.assign(new TokenRefused(REFUSAL_MESSAGES[reason]), { reason })
}

export function isRefusedToken (error: unknown): error is RefusedToken {
  return error instanceof TokenRefused
}

/** The claim assisted-service's local authentication puts the InfraEnv id in. */
export const LOCAL_AUTH_CLAIM = 'infra_env_id'

export interface TokenPolicy {
  /**
   * Checks a local-authentication token (signature, algorithm, `exp`, the
   * InfraEnv claim) and returns its payload, throwing fast-jwt's TokenError.
   * Absent when no public key is configured: such tokens are then only read.
   */
  verifyLocal?: (token: string) => Record<string, unknown>
  clockToleranceMs: number
  now?: () => number
}

export interface AdmittedToken {
  /** The image the token names, when it names a valid one. */
  imageId?: string
  /** The token's `exp`, in milliseconds. */
  expiresAt?: number
}

const decodePayload = createDecoder()
/** Claims of tokens read lately: a BMC's thousands of Range requests carry the same token (exp is still checked each time). */
const TOKENS_REMEMBERED = 1000

/** What a verifier's error means for the client. */
function refusalOf (error: unknown): TokenRefusal {
  if (!(error instanceof TokenError)) return 'malformed'
  switch (error.code) {
    case TokenError.codes.expired: return 'expired'
    case TokenError.codes.inactive: return 'not_yet_valid'
    case TokenError.codes.missingRequiredClaim: return 'missing_claim'
    case TokenError.codes.malformed:
    case TokenError.codes.invalidPayload:
    case TokenError.codes.invalidClaimType:
    case TokenError.codes.invalidClaimValue: return 'malformed'
    default: return 'bad_signature'
  }
}

/**
 * The one place tokens are read. `api_key` credentials (assisted-service's
 * local authentication, ES256) are verified when a key is configured; image
 * tokens (HS256 with a key only assisted-service holds) and, without a key,
 * API keys are only decoded, and refused here only when their `exp` has
 * passed. Everything else is assisted-service's to decide.
 */
export class TokenCheck {
  readonly #policy: TokenPolicy
  readonly #now: () => number
  readonly #claims = new BoundedCache<string, Record<string, unknown> | null>({ maxEntries: TOKENS_REMEMBERED })

  constructor (policy: TokenPolicy) {
    this.#policy = policy
    this.#now = policy.now ?? Date.now
  }

  get verifies (): boolean {
    return this.#policy.verifyLocal !== undefined
  }

  /**
   * Admits a credential or throws TokenRefused. A token that cannot be read
   * at all is not refused here (unless it had to be verified): the route
   * answers 404 when it needed the image id from it.
   */
  admit (credential: Credential | undefined): AdmittedToken {
    if (credential === undefined || credential.kind === 'authorization') return {}
    const { verifyLocal } = this.#policy
    if (credential.kind === 'api_key' && verifyLocal !== undefined) {
      let claims: Record<string, unknown>
      try {
        claims = verifyLocal(credential.value)
      } catch (error) {
        throw refusedToken(refusalOf(error))
      }
      const id = claims[LOCAL_AUTH_CLAIM]
      if (typeof id !== 'string' || !isImageId(id)) throw refusedToken('missing_claim')
      return { imageId: id, ...expiryOf(claims) }
    }
    let claims = this.#claims.get(credential.value)
    if (claims === undefined) {
      claims = readClaims(credential.value) ?? null
      this.#claims.set(credential.value, claims)
    }
    if (claims === null) return {}
    const admitted = { ...optionalImageId(claims), ...expiryOf(claims) }
    if (admitted.expiresAt !== undefined && admitted.expiresAt + this.#policy.clockToleranceMs <= this.#now()) {
      throw refusedToken('expired')
    }
    return admitted
  }
}

function expiryOf (claims: Record<string, unknown>): { expiresAt?: number } {
  return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? { expiresAt: claims.exp * 1000 } : {}
}

/** The image id of an unverified token: `sub`, else `infra_env_id` (api.md), when it is a valid id. */
function optionalImageId (claims: Record<string, unknown>): { imageId?: string } {
  for (const claim of ['sub', LOCAL_AUTH_CLAIM]) {
    const value = claims[claim]
    if (typeof value === 'string' && value !== '') return isImageId(value) ? { imageId: value } : {}
  }
  return {}
}

/**
 * The payload of a token whose segments may also be standard base64, padded
 * or not (api.md): transliterated to base64url for the decoder, which accepts
 * only that. Signed tokens are verified as they came, never transliterated.
 */
function readClaims (token: string): Record<string, unknown> | undefined {
  const urlSafe = token.split('.').map(segment => segment.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')).join('.')
  try {
    const claims: unknown = decodePayload(urlSafe)
    return typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? claims as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}
