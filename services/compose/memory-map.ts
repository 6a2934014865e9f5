/**
 * Read-only memory maps of image files, through libc's mmap called with koffi
 * (an FFI whose npm package ships prebuilt binaries). A response then hands
 * slices of the page cache to the socket: one copy per byte instead of a pread
 * into a buffer and a second copy out of it.
 *
 * Everything here is synchronous and cheap except `populate`, which runs on a
 * worker thread. A slice is valid only until `unmap()`: the caller keeps count
 * of who still holds one (see FilePool).
 */
import { promisify } from 'node:util'

export interface MappedRegion {
  /** The whole file. Touching a page that is not in the page cache blocks the calling thread on disk. */
  readonly bytes: Buffer
  /** Whether every page of [offset, offset + length) is in the page cache right now. */
  resident (offset: number, length: number): boolean
  /** Faults [offset, offset + length) in off the event loop (MADV_POPULATE_READ on a worker thread). */
  populate (offset: number, length: number): Promise<void>
  unmap (): void
}

export interface MemoryMapper {
  /** Maps `size` bytes of the open file `fd` read-only and shared. Throws with the errno's name on failure. */
  map (fd: number, size: number): MappedRegion
}

// Linux values (the same on x86_64, aarch64, ppc64le, s390x and riscv64).
const PROT_READ = 0x1
const MAP_SHARED = 0x1
const MADV_POPULATE_READ = 22
const SC_PAGESIZE = 30
const MAP_FAILED = 0xffffffffffffffffn

type Pointer = bigint

interface Libc {
  mmap (addr: null, length: number, prot: number, flags: number, fd: number, offset: number): Pointer
  munmap (addr: Pointer, length: number): number
  mincore (addr: Pointer, length: number, vec: Buffer): number
  madvise: ((addr: Pointer, length: number, advice: number) => number) & { async: (...args: unknown[]) => void }
  view (addr: Pointer, length: number): ArrayBuffer
  errno (): number
  pageSize: number
}

/**
 * Loads koffi and libc. Rejects where either cannot load (no prebuilt koffi
 * for this platform, or not Linux); the caller then serves with reads.
 */
export async function loadMemoryMapper (): Promise<MemoryMapper> {
  if (process.platform !== 'linux') throw new Error(`memory maps are used on Linux only, not ${process.platform}`)
  const { default: koffi } = await import('koffi')
  const lib = koffi.load('libc.so.6')
  const sysconf = lib.func('long sysconf(int name)') as (name: number) => number
  const libc: Libc = {
    mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)') as Libc['mmap'],
    munmap: lib.func('int munmap(void *addr, size_t length)') as Libc['munmap'],
    mincore: lib.func('int mincore(void *addr, size_t length, _Out_ uint8_t *vec)') as Libc['mincore'],
    madvise: lib.func('int madvise(void *addr, size_t length, int advice)') as Libc['madvise'],
    view: (addr, length) => koffi.view(addr, length) as ArrayBuffer,
    errno: () => koffi.errno() as number,
    pageSize: sysconf(SC_PAGESIZE)
  }
  if (!(libc.pageSize > 0)) throw new Error('sysconf(_SC_PAGESIZE) failed')
  const populate = promisify(libc.madvise.async) as (addr: Pointer, length: number, advice: number) => Promise<number>
  return {
    map (fd: number, size: number): MappedRegion {
      if (size === 0) return EMPTY_REGION
      const base = libc.mmap(null, size, PROT_READ, MAP_SHARED, fd, 0)
      if (base === MAP_FAILED || base === 0n) throw new Error(`mmap failed: ${errnoName(libc.errno())}`)
      return new Region(libc, base, size, populate)
    }
  }
}

class Region implements MappedRegion {
  readonly bytes: Buffer
  readonly #libc: Libc
  readonly #base: Pointer
  readonly #size: number
  readonly #populate: (addr: Pointer, length: number, advice: number) => Promise<number>
  #populateWorks = true
  #populating = 0
  #mapped = true

  constructor (libc: Libc, base: Pointer, size: number, populate: (addr: Pointer, length: number, advice: number) => Promise<number>) {
    this.#libc = libc
    this.#base = base
    this.#size = size
    this.#populate = populate
    this.bytes = Buffer.from(libc.view(base, size))
  }

  #pages (offset: number, length: number): { addr: Pointer, length: number } {
    const page = this.#libc.pageSize
    const from = Math.floor(offset / page) * page
    const to = Math.min(this.#size, offset + length)
    return { addr: this.#base + BigInt(from), length: to - from }
  }

  resident (offset: number, length: number): boolean {
    if (!this.#mapped) throw new Error('region is unmapped')
    if (length <= 0) return true
    const span = this.#pages(offset, length)
    const pages = Math.ceil(span.length / this.#libc.pageSize)
    const vec = residencyVector(pages)
    if (this.#libc.mincore(span.addr, span.length, vec) !== 0) return false
    for (let i = 0; i < pages; i++) if ((vec[i]! & 1) === 0) return false
    return true
  }

  async populate (offset: number, length: number): Promise<void> {
    if (!this.#mapped) throw new Error('region is unmapped')
    if (length <= 0) return
    if (!this.#populateWorks) throw new Error('madvise(MADV_POPULATE_READ) is not supported here')
    const span = this.#pages(offset, length)
    this.#populating++
    let result: number
    try {
      result = await this.#populate(span.addr, span.length, MADV_POPULATE_READ)
    } finally {
      // The range is unmapped only once no worker thread works on it: its addresses may be reused at once.
      if (--this.#populating === 0 && !this.#mapped) this.#libc.munmap(this.#base, this.#size)
    }
    // MADV_POPULATE_READ (Linux 5.14) waits for the reads; older kernels say EINVAL and the caller reads instead.
    if (result !== 0) {
      this.#populateWorks = false
      throw new Error('madvise(MADV_POPULATE_READ) failed')
    }
  }

  unmap (): void {
    if (!this.#mapped) return
    this.#mapped = false
    if (this.#populating === 0) this.#libc.munmap(this.#base, this.#size)
  }
}

const EMPTY_REGION: MappedRegion = {
  bytes: Buffer.alloc(0),
  resident: () => true,
  populate: async () => {},
  unmap: () => {}
}

let vector = Buffer.alloc(1024)
/** mincore's output, one byte a page; shared because every call is synchronous on this thread. */
function residencyVector (pages: number): Buffer {
  if (vector.length < pages) vector = Buffer.alloc(pages)
  return vector
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 9: 'EBADF', 12: 'ENOMEM', 13: 'EACCES', 19: 'ENODEV', 22: 'EINVAL', 23: 'ENFILE', 24: 'EMFILE' }
function errnoName (errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`
}
