import { createServer, type AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import type { Test } from 'tap'
import { loadConfig, type Env } from '../services/config.ts'
import { buildServer, createLogger, startServer, type ServerOptions } from '../server.ts'

/** Captures every JSON log line the app writes. */
export class LogCapture extends Writable {
  readonly lines: string[] = []
  override _write (chunk: Buffer, _encoding: string, callback: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(line => line !== ''))
    callback()
  }

  get text (): string { return this.lines.join('\n') }
  records (): Array<Record<string, unknown>> { return this.lines.map(line => JSON.parse(line) as Record<string, unknown>) }
}

/** Minimal environment that passes validation without any OS image or assisted-service. */
export function baseEnv (t: Test, env: Env = {}): Env {
  // testdirName, not testdir(): a second testdir() call in the same test would wipe the first.
  return { DATA_DIR: `${t.testdirName}/data`, LOG_LEVEL: 'info', ...env }
}

/** Builds the app with an injected env (never process.env) and closes it after the test. */
export async function build (t: Test, env: Env = {}, options: ServerOptions = {}) {
  const config = loadConfig(baseEnv(t, env))
  const logs = new LogCapture()
  const { fastify } = await buildServer(config, { logger: createLogger(config, logs), ...options })
  t.after(() => fastify.close())
  return { app: fastify, config, logs }
}

/** Builds and listens on 127.0.0.1 with ephemeral ports. `prepare` may add routes before listening. */
export async function listen (t: Test, env: Env = {}, prepare?: ServerOptions['prepare'], options: ServerOptions = {}) {
  const config = loadConfig(baseEnv(t, { LISTEN_PORT: '0', ...env }))
  const logs = new LogCapture()
  const started = await startServer(config, { logger: createLogger(config, logs), host: '127.0.0.1', ...options, ...(prepare !== undefined ? { prepare } : {}) })
  t.after(() => started.fastify.close())
  const scheme = config.tls !== undefined ? 'https' : 'http'
  return { ...started, config, logs, url: `${scheme}://127.0.0.1:${started.mainPort}` }
}

/** A TCP port free on 127.0.0.1 right now (for processes the test starts itself). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}
