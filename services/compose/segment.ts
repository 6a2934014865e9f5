/** A piece of a composed image: bytes we hold, a range of a file on disk, or zeros. */
export type Segment =
  | { kind: 'buffer', data: Buffer }
  | { kind: 'file', path: string, offset: number, length: number }
  | { kind: 'zero', length: number }

export function segmentLength (segment: Segment): number {
  return segment.kind === 'buffer' ? segment.data.length : segment.length
}
