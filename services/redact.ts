const SECRET_PATH = /^(\/(?:bytoken|byapikey|s)\/)[^/?#]*/
const SECRET_QUERY = /([?&](?:api_key|image_token)=)[^&#]*/gi

export const REDACTED = '[REDACTED]'

/** A request URL fit for logs: path tokens and credential query values removed. */
export function redactUrl (url: string): string {
  return url.replace(SECRET_PATH, `$1${REDACTED}`).replace(SECRET_QUERY, `$1${REDACTED}`)
}

/** Header names whose values are credentials. */
export const SECRET_HEADERS = ['authorization', 'image-token', 'cookie', 'x-api-key'] as const
