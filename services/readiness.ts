/**
 * Which OS images can be served. Each configured image registers a key;
 * the service is ready when every registered key is.
 */
export class Readiness {
  readonly #state = new Map<string, boolean>()

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

  pending (): string[] {
    return [...this.#state].filter(([, ready]) => !ready).map(([key]) => key)
  }
}
