/** What a process does on SIGTERM or SIGINT: the single process and each worker close Fastify, the primary drains its workers. */
export interface Termination {
  log: { info: (obj: object, msg: string) => void, warn: (msg: string) => void, error: (obj: object, msg: string) => void }
  /** Stops taking work and resolves once what was in flight has finished. */
  drain: () => Promise<void>
  /** After the grace period: cuts what is left. `drain` is expected to settle soon after. */
  force: () => void
  graceMs: number
  exit?: (code: number) => void
}

/** Handles the first SIGTERM or SIGINT (a second one changes nothing): drain, force after the grace period, exit 0. */
export function onTermination ({ log, drain, force, graceMs, exit = process.exit }: Termination): void {
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal, graceSeconds: graceMs / 1000 }, 'shutting down')
    const timer = setTimeout(() => {
      log.warn('grace period over, closing what is left')
      force()
    }, graceMs)
    timer.unref()
    drain().then(() => exit(0), (err: unknown) => {
      log.error({ err }, 'error while shutting down')
      exit(0)
    })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
}
