import { promisify } from 'node:util'

/** Frees the disk blocks under [offset, offset + length) of an open file; the file keeps its size and reads zeros there. */
export type HolePuncher = (fd: number, offset: number, length: number) => Promise<void>

const FALLOC_FL_KEEP_SIZE = 0x01
const FALLOC_FL_PUNCH_HOLE = 0x02

/**
 * fallocate(2) with FALLOC_FL_PUNCH_HOLE, through koffi on a worker thread:
 * Node has no call for it, and a cache that may not grow past a budget must
 * give disk back without truncating a file that other processes map (that
 * would kill them with SIGBUS). Rejects where koffi or libc cannot load.
 */
export async function loadHolePuncher (): Promise<HolePuncher> {
  if (process.platform !== 'linux') throw new Error(`punching holes works on Linux only, not ${process.platform}`)
  const { default: koffi } = await import('koffi')
  const lib = koffi.load('libc.so.6')
  const fallocate = lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as { async: (...args: unknown[]) => void }
  const call = promisify(fallocate.async) as (fd: number, mode: number, offset: number, length: number) => Promise<number>
  return async (fd, offset, length) => {
    if (await call(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) !== 0) {
      throw new Error(`fallocate(FALLOC_FL_PUNCH_HOLE) failed: errno ${koffi.errno() as number}`)
    }
  }
}
