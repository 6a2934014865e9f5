import { pino, type DestinationStream, type Logger } from 'pino'
import type { Config } from '../config.ts'
import { redactUrl, REDACTED } from './redact.ts'

/** The service's logger: credentials in headers are censored and URLs redacted wherever they are logged. */
export function createLogger (config: Pick<Config, 'logLevel'>, destination?: DestinationStream): Logger {
  return pino({
    level: config.logLevel,
    redact: {
      paths: ['req.headers.authorization', 'req.headers["image-token"]', 'headers.authorization', 'headers["image-token"]'],
      censor: REDACTED
    },
    serializers: {
      req: (req: { method?: string, url?: string }) => ({ method: req.method, url: redactUrl(req.url ?? '') }),
      err: pino.stdSerializers.err
    }
  }, destination)
}
