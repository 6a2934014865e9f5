// Request and response schemas of the image routes. Each is one `as const` declaration: Fastify validates
// with it, and @fastify/type-provider-json-schema-to-ts derives the handler's types from it at compile time
// (nothing is loaded at run time, which keeps every worker's memory as it was).
import { IMAGE_ID_PATTERN } from '../services/images/credentials.ts'

export const UUID = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

/** The `{ code, message }` body of every error answer (plugins/app/errors.ts). */
const errorBodySchema = {
  type: 'object',
  required: ['code', 'message'],
  properties: { code: { type: 'string' }, message: { type: 'string' } },
  additionalProperties: false
} as const

/** Error answers an image route may give; its 200/206 bodies are images, written by plugins/app/send-image.ts. */
export const imageRouteResponses = { '4xx': errorBodySchema, '5xx': errorBodySchema } as const

/** Path of the short ISO routes: `/{byid|bytoken|byapikey}/{first}/{version}/{arch}/{filename}`. */
export const isoPathParams = <First extends string>(first: First, pattern?: string) => ({
  type: 'object',
  required: [first, 'version', 'arch', 'filename'],
  properties: {
    [first]: { type: 'string', minLength: 1, ...(pattern !== undefined ? { pattern } : {}) },
    version: { type: 'string', minLength: 1 },
    arch: { type: 'string', minLength: 1 },
    filename: { type: 'string' }
  }
}) as const

export const imageIdParams = {
  type: 'object',
  required: ['imageId'],
  properties: { imageId: { type: 'string', pattern: IMAGE_ID_PATTERN.source } }
} as const

/** The deprecated long form: `/images/{imageId}?version=&type=&arch=`. */
export const isoQuery = {
  type: 'object',
  required: ['version', 'type'],
  properties: {
    version: { type: 'string', minLength: 1 },
    type: { type: 'string', enum: ['full-iso', 'minimal-iso', 'disconnected-iso'] },
    arch: { type: 'string', minLength: 1 }
  }
} as const

/** PXE initrd, s390x addrsize and boot artifacts: the OS image by query. */
export const osImageQuery = {
  type: 'object',
  required: ['version'],
  properties: {
    version: { type: 'string', minLength: 1 },
    arch: { type: 'string', minLength: 1 }
  }
} as const

export const artifactParams = {
  type: 'object',
  required: ['artifact'],
  properties: { artifact: { type: 'string' } }
} as const

export const shortLinkParams = {
  type: 'object',
  required: ['code', 'filename'],
  properties: {
    code: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' },
    filename: { type: 'string' }
  }
} as const

export const liveResponse = {
  200: { type: 'object', required: ['status'], properties: { status: { type: 'string', const: 'alive' } } }
} as const

const degraded = {
  type: 'array',
  description: 'OS images that serve, but not everything: an image of OpenShift >= 4.18 without nmstatectl',
  items: { type: 'object', required: ['image', 'reason'], properties: { image: { type: 'string' }, reason: { type: 'string' } } }
} as const

const refused = {
  type: 'array',
  description: 'OS images refused for good: their bytes cannot be served as they are (the reason says why)',
  items: { type: 'object', required: ['image', 'reason'], properties: { image: { type: 'string' }, reason: { type: 'string' } } }
} as const

export const healthResponse = {
  200: { type: 'object', required: ['status'], properties: { status: { type: 'string', const: 'ready' }, degraded, refused } },
  503: {
    type: 'object',
    required: ['status', 'pending'],
    properties: { status: { type: 'string', const: 'not ready' }, pending: { type: 'array', items: { type: 'string' } }, degraded, refused }
  }
} as const
