/** Every few seconds: cheap when there is nothing to give back, and it keeps a churned heap from settling big. */
const TRIM_EVERY_MS = 3_000

/**
 * glibc's `malloc_trim(0)` through koffi, every three seconds, in a process
 * whose work churns the C heap: a primary fetching blocks makes thousands of
 * short-lived socket buffers, and glibc gives back only the top of its heap.
 * Measured with one 1 GiB image after a cold full-ISO stream: the primary
 * kept 83-107 MiB of private memory without it, 45-74 MiB with it; trims only
 * after the stream gave back less (the heap had settled fragmented). Where
 * koffi or glibc's malloc_trim is not there (musl, s390x), nothing is done.
 */
export async function startHeapTrims (): Promise<() => void> {
  let trim: (pad: number) => number
  try {
    if (process.platform !== 'linux') throw new Error('not Linux')
    const { default: koffi } = await import('koffi')
    trim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as (pad: number) => number
  } catch {
    return () => {}
  }
  const timer = setInterval(() => trim(0), TRIM_EVERY_MS)
  timer.unref()
  return () => clearInterval(timer)
}
