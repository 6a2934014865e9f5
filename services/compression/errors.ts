/** Compressed data that cannot be decoded: corrupt, truncated, or a format we do not read. */
export class CompressionError extends Error {
  readonly code = 'COMPRESSION'
  constructor (message: string) {
    super(message)
    this.name = 'CompressionError'
  }
}
