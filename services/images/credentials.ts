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
