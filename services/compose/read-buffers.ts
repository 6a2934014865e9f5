/** The smallest buffer lent, and the only size lent outside the budget. */
export const SMALLEST_BUFFER = 128 << 10
/** The largest read a writer asks for at once; a budget is never smaller. */
export const LARGEST_BUFFER = 4 << 20
/** Bytes of large read buffers the whole service may lend at once, split between its worker processes. */
export const LARGE_BUFFER_BUDGET = 48 << 20

let largeLentInProcess = 0
/** Bytes of large read buffers lent right now, across every pool of this process (0 when no image is being sent). */
export function largeBuffersInUse (): number { return largeLentInProcess }

/**
 * Free lists of read buffers by power-of-two size, so streams reuse memory
 * instead of faulting in fresh pages for every chunk. Idle buffers are capped;
 * a buffer is reused only after its write has completed.
 */
export class ReadBuffers {
  /** Large buffers this pool may hold at once, lent or idle. */
  readonly budget: number
  readonly #free = new Map<number, Buffer[]>()
  #idleBytes = 0
  #largeInUse = 0

  constructor (budget = LARGE_BUFFER_BUDGET) {
    this.budget = Math.max(LARGEST_BUFFER, budget)
  }

  /**
   * A buffer for up to `size` bytes. Buffers above the smallest class come
   * from the budget: when slow clients hold it all, others get the smallest
   * class, so memory stays bounded however many clients stall.
   */
  take (size: number): Buffer {
    let cls = SMALLEST_BUFFER
    while (cls < size) cls *= 2
    if (cls > SMALLEST_BUFFER && this.#largeInUse + cls > this.budget) cls = SMALLEST_BUFFER
    // An idle buffer at least as large serves as well: it is already held, so nothing new is allocated. Allocating
    // and dropping buffers under load makes V8 collect for their external memory (a fifth of the CPU, measured).
    const buffer = this.#takeIdle(cls) ?? this.#allocate(cls)
    if (buffer.length > SMALLEST_BUFFER) {
      this.#largeInUse += buffer.length
      largeLentInProcess += buffer.length
    }
    return buffer
  }

  /** The smallest idle buffer of `cls` bytes or more. */
  #takeIdle (cls: number): Buffer | undefined {
    let best: number | undefined
    for (const [length, list] of this.#free) if (length >= cls && list.length > 0 && (best === undefined || length < best)) best = length
    if (best === undefined) return undefined
    const buffer = this.#free.get(best)!.pop()!
    this.#idleBytes -= buffer.length
    return buffer
  }

  #allocate (cls: number): Buffer {
    // The smallest buffers are outside the budget. For a large one, smaller idle buffers make room, so that what is
    // held (lent and idle) stays within the budget.
    if (cls === SMALLEST_BUFFER) return Buffer.allocUnsafeSlow(cls)
    for (const [length, list] of this.#free) {
      while (list.length > 0 && this.#largeInUse + this.#idleBytes + cls > this.budget) this.#idleBytes -= list.pop()!.length
      if (list.length === 0) this.#free.delete(length)
    }
    return Buffer.allocUnsafeSlow(cls)
  }

  get largeInUse (): number { return this.#largeInUse }

  /**
   * A buffer back from its write. It is kept for the next stream while what
   * is held stays within the budget: dropping and reallocating multi-MiB
   * buffers under load makes V8 collect for the external memory they hold.
   */
  give (buffer: Buffer): void {
    if (buffer.length > SMALLEST_BUFFER) {
      this.#largeInUse -= buffer.length
      largeLentInProcess -= buffer.length
    }
    if (this.#largeInUse + this.#idleBytes + buffer.length > this.budget) return
    let list = this.#free.get(buffer.length)
    if (list === undefined) { list = []; this.#free.set(buffer.length, list) }
    list.push(buffer)
    this.#idleBytes += buffer.length
  }
}
