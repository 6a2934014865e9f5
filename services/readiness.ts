/**
 * Which OS images can be served. Each configured image registers a key;
 * the service is ready when every registered key is.
 */
export class Readiness {
  readonly #state = new Map<string, boolean>()
  readonly #degraded = new Map<string, string>()

  register (key: string): void {
    if (!this.#state.has(key)) this.#state.set(key, false)
  }

  set (key: string, ready: boolean): void {
    this.#state.set(key, ready)
  }

  isReady (key: string): boolean {
    return this.#state.get(key) === true
  }

  allReady (): boolean {
    for (const ready of this.#state.values()) if (!ready) return false
    return true
  }

  /**
   * A ready image that serves only part of what it should (for example no
   * nmstatectl): shown in /health's body, while the pod stays in rotation.
   */
  setDegraded (key: string, reason: string | undefined): void {
    if (reason === undefined) this.#degraded.delete(key)
    else this.#degraded.set(key, reason)
  }

  degraded (): Array<{ image: string, reason: string }> {
    return [...this.#degraded].map(([image, reason]) => ({ image, reason }))
  }

  pending (): string[] {
    return [...this.#state].filter(([, ready]) => !ready).map(([key]) => key)
  }
}
