import type { Credential } from '../upstream/infra-env-source.ts'

/**
 * What an image (InfraEnv) id may look like wherever it comes from (a path, a
 * token's claims): it becomes an upstream URL segment, a file name and a header
 * value, so no dot segments, separators, controls or quotes.
 */
export const IMAGE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

export function isImageId (value: string): boolean {
  return IMAGE_ID_PATTERN.test(value)
}

export interface CredentialSources {
  pathApiKey?: string
  pathToken?: string
  query: Record<string, unknown>
  authorization?: string
}

/**
 * Exactly one credential, the first present in this order: the /byapikey/
 * path segment, the /bytoken/ path segment, the api_key query, the
 * image_token query, the Authorization header.
 */
export function pickCredential (sources: CredentialSources): Credential | undefined {
  const text = (v: unknown) => typeof v === 'string' && v !== '' ? v : undefined
  const pathApiKey = text(sources.pathApiKey)
  if (pathApiKey !== undefined) return { kind: 'api_key', value: pathApiKey }
  const pathToken = text(sources.pathToken)
  if (pathToken !== undefined) return { kind: 'image_token', value: pathToken }
  const apiKey = text(sources.query.api_key)
  if (apiKey !== undefined) return { kind: 'api_key', value: apiKey }
  const imageToken = text(sources.query.image_token)
  if (imageToken !== undefined) return { kind: 'image_token', value: imageToken }
  const authorization = text(sources.authorization)
  if (authorization !== undefined) return { kind: 'authorization', value: authorization }
  return undefined
}

/**
 * The claims of a JWT's payload, which may be base64url or standard base64,
 * padded or not. The signature is not checked here: assisted-service checks it
 * when we forward the token.
 */
function jwtClaims (token: string): Record<string, unknown> | undefined {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1] === '') return undefined
  const payload = parts[1]!.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '')
  if (!/^[A-Za-z0-9+/]+$/.test(payload)) return undefined
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64').toString('utf8'))
    return typeof claims === 'object' && claims !== null ? claims as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** The image id in a JWT's payload (`sub`, else `infra_env_id`), when it is a valid image id. */
export function imageIdFromJwt (token: string): string | undefined {
  const claims = jwtClaims(token)
  for (const claim of ['sub', 'infra_env_id']) {
    const value = claims?.[claim]
    if (typeof value === 'string' && value !== '') return isImageId(value) ? value : undefined
  }
  return undefined
}

/** A JWT's `exp` in milliseconds, when it has one. */
export function jwtExpiry (token: string): number | undefined {
  const exp = jwtClaims(token)?.exp
  return typeof exp === 'number' ? exp * 1000 : undefined
}
