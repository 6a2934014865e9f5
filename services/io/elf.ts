export const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46])

/** Whether `head` (a file's first bytes, at least four) starts as an ELF binary does. */
export function isElf (head: Uint8Array): boolean {
  return head.length >= ELF_MAGIC.length && ELF_MAGIC.equals(head.subarray(0, ELF_MAGIC.length))
}
