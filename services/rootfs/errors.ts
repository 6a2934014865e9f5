/** A filesystem image we cannot read: corrupt, truncated, or using a feature we do not support. */
export class FilesystemError extends Error {
  readonly code = 'ROOTFS_FORMAT'
  constructor (message: string) {
    super(message)
    this.name = 'FilesystemError'
  }
}
