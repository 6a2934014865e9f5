/** Where a root filesystem says what it is: a little-endian u32 at a fixed byte offset of the image. */
export interface Magic {
  readonly offset: number
  readonly value: number
}

/** squashfs 4.0: "hsqs" opens the superblock at byte 0. */
export const SQUASHFS_MAGIC: Magic = { offset: 0, value: 0x73717368 }

/** EROFS: the superblock starts 1024 bytes in, with its magic. */
export const EROFS_MAGIC: Magic = { offset: 1024, value: 0xE0F5E1E2 }

/** Whether `image` (its first bytes, from byte 0) carries `magic`. */
export function hasMagic (image: Buffer, magic: Magic): boolean {
  return image.length >= magic.offset + 4 && image.readUInt32LE(magic.offset) === magic.value
}
