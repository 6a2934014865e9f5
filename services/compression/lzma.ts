import { CompressionError } from '../errors.ts'

/**
 * LZMA (the algorithm behind xz's LZMA2 and EROFS's MicroLZMA), decoded into a
 * caller-sized output buffer that doubles as the dictionary. Every output this
 * service decodes is bounded and known up front (a squashfs block, an EROFS
 * pcluster, an initrd member with a limit), so there is no sliding window.
 */

const PROB_INIT = 1024
const STATES = 12
const POS_STATES_MAX = 16
const LEN_LOW = 8
const LEN_MID = 8
const LEN_HIGH = 256
const DIST_STATES = 4
const END_POS_MODEL = 14
const FULL_DISTANCES = 128
const ALIGN_BITS = 4

export interface LzmaProperties { lc: number, lp: number, pb: number }

/** Decodes the lc/lp/pb byte that LZMA1 headers, LZMA2 chunks and MicroLZMA carry. */
export function parseLzmaProperties (byte: number): LzmaProperties {
  if (byte >= 9 * 5 * 5) throw new CompressionError(`lzma: invalid properties byte 0x${byte.toString(16)}`)
  const lc = byte % 9
  const rest = Math.floor(byte / 9)
  return { lc, lp: rest % 5, pb: Math.floor(rest / 5) }
}

class LengthDecoder {
  choice = new Uint16Array(2)
  low = new Uint16Array(POS_STATES_MAX * LEN_LOW)
  mid = new Uint16Array(POS_STATES_MAX * LEN_MID)
  high = new Uint16Array(LEN_HIGH)

  reset (): void {
    this.choice.fill(PROB_INIT); this.low.fill(PROB_INIT); this.mid.fill(PROB_INIT); this.high.fill(PROB_INIT)
  }
}

/**
 * One LZMA decoder: range coder, probability model and match state. LZMA2 keeps
 * it across chunks and resets parts of it as each chunk's control byte says.
 */
export class LzmaDecoder {
  // Range coder
  #input: Uint8Array = new Uint8Array(0)
  #inPos = 0
  #inEnd = 0
  #range = 0
  #code = 0

  // Model
  #lc = 0
  #lp = 0
  #pb = 0
  #literal = new Uint16Array(0x300)
  #isMatch = new Uint16Array(STATES * POS_STATES_MAX)
  #isRep = new Uint16Array(STATES)
  #isRepG0 = new Uint16Array(STATES)
  #isRepG1 = new Uint16Array(STATES)
  #isRepG2 = new Uint16Array(STATES)
  #isRep0Long = new Uint16Array(STATES * POS_STATES_MAX)
  #distSlot = new Uint16Array(DIST_STATES * 64)
  #distSpecial = new Uint16Array(1 + FULL_DISTANCES - END_POS_MODEL)
  #align = new Uint16Array(1 << ALIGN_BITS)
  #matchLen = new LengthDecoder()
  #repLen = new LengthDecoder()

  // Match state
  #state = 0
  #rep0 = 0
  #rep1 = 0
  #rep2 = 0
  #rep3 = 0
  /** A match copy that did not fit the previous output limit (LZMA2 chunk boundaries never split one; MicroLZMA may). */
  #pendingLen = 0

  /** Output: the dictionary is the output buffer itself, from `dictStart` on. */
  out: Uint8Array
  pos = 0
  dictStart = 0

  constructor (out: Uint8Array) {
    this.out = out
  }

  setProperties (props: LzmaProperties): void {
    this.#lc = props.lc; this.#lp = props.lp; this.#pb = props.pb
    const size = 0x300 << (props.lc + props.lp)
    if (this.#literal.length !== size) this.#literal = new Uint16Array(size)
  }

  resetState (): void {
    this.#literal.fill(PROB_INIT)
    this.#isMatch.fill(PROB_INIT); this.#isRep.fill(PROB_INIT)
    this.#isRepG0.fill(PROB_INIT); this.#isRepG1.fill(PROB_INIT); this.#isRepG2.fill(PROB_INIT)
    this.#isRep0Long.fill(PROB_INIT)
    this.#distSlot.fill(PROB_INIT); this.#distSpecial.fill(PROB_INIT); this.#align.fill(PROB_INIT)
    this.#matchLen.reset(); this.#repLen.reset()
    this.#state = 0
    this.#rep0 = this.#rep1 = this.#rep2 = this.#rep3 = 0
    this.#pendingLen = 0
  }

  /** Starts the range coder on `input[start, end)`; `skipZero` for the usual leading 0x00. */
  startRangeCoder (input: Uint8Array, start: number, end: number, skipZero: boolean): void {
    if (end - start < (skipZero ? 5 : 4)) throw new CompressionError('lzma: truncated range coder header')
    let p = start
    if (skipZero && input[p++] !== 0) throw new CompressionError('lzma: range coder does not start with 0')
    this.#code = ((input[p]! << 24) | (input[p + 1]! << 16) | (input[p + 2]! << 8) | input[p + 3]!) >>> 0
    this.#range = 0xFFFFFFFF
    this.#input = input
    this.#inPos = p + 4
    this.#inEnd = end
  }

  get inputPosition (): number { return this.#inPos }

  /**
   * Takes the byte a final normalization would read, then tells whether the
   * range coder is in the state an encoder flush leaves (code 0).
   */
  finishRangeCoder (): boolean {
    if (this.#range < 0x1000000 && this.#inPos < this.#inEnd) this.#normalize()
    return this.#code === 0
  }

  #normalize (): void {
    if (this.#range < 0x1000000) {
      if (this.#inPos >= this.#inEnd) throw new CompressionError('lzma: compressed data is truncated')
      this.#range = (this.#range << 8) >>> 0
      this.#code = ((this.#code << 8) | this.#input[this.#inPos++]!) >>> 0
    }
  }

  #bit (probs: Uint16Array, i: number): number {
    this.#normalize()
    const prob = probs[i]!
    const bound = (this.#range >>> 11) * prob
    if (this.#code < bound) {
      this.#range = bound
      probs[i] = prob + ((2048 - prob) >>> 5)
      return 0
    }
    this.#range -= bound
    this.#code -= bound
    probs[i] = prob - (prob >>> 5)
    return 1
  }

  #tree (probs: Uint16Array, base: number, bits: number): number {
    let m = 1
    for (let i = 0; i < bits; i++) m = (m << 1) | this.#bit(probs, base + m)
    return m - (1 << bits)
  }

  #reverseTree (probs: Uint16Array, base: number, bits: number): number {
    let m = 1
    let symbol = 0
    for (let i = 0; i < bits; i++) {
      const b = this.#bit(probs, base + m)
      m = (m << 1) | b
      symbol |= b << i
    }
    return symbol
  }

  #direct (bits: number): number {
    let result = 0
    for (let i = 0; i < bits; i++) {
      this.#normalize()
      this.#range >>>= 1
      let b = 0
      if (this.#code >= this.#range) { this.#code -= this.#range; b = 1 }
      result = ((result << 1) | b) >>> 0
    }
    return result
  }

  #length (d: LengthDecoder, posState: number): number {
    if (this.#bit(d.choice, 0) === 0) return this.#tree(d.low, posState * LEN_LOW - 1 + 0, 3)
    if (this.#bit(d.choice, 1) === 0) return LEN_LOW + this.#tree(d.mid, posState * LEN_MID - 1 + 0, 3)
    return LEN_LOW + LEN_MID + this.#tree(d.high, -1, 8)
  }

  #distance (len: number): number {
    const lenState = len < DIST_STATES - 1 ? len : DIST_STATES - 1
    const slot = this.#tree(this.#distSlot, lenState * 64 - 1, 6)
    if (slot < 4) return slot
    const bits = (slot >>> 1) - 1
    let dist = ((2 | (slot & 1)) << bits) >>> 0
    if (slot < END_POS_MODEL) return (dist + this.#reverseTree(this.#distSpecial, dist - slot - 1, bits)) >>> 0
    dist = (dist + (this.#direct(bits - ALIGN_BITS) << ALIGN_BITS)) >>> 0
    return (dist + this.#reverseTree(this.#align, -1, ALIGN_BITS)) >>> 0
  }

  #copy (len: number, limit: number): void {
    const out = this.out
    const n = Math.min(len, limit - this.pos)
    let src = this.pos - this.#rep0 - 1
    let dst = this.pos
    if (this.#rep0 + 1 >= n) {
      out.copyWithin(dst, src, src + n)
    } else {
      for (let i = 0; i < n; i++) out[dst++] = out[src++]!
    }
    this.pos += n
    this.#pendingLen = len - n
  }

  /**
   * Decodes until the output reaches `limit` or an end marker appears.
   * Returns true when it stopped at an end marker.
   */
  decode (limit: number): boolean {
    const out = this.out
    if (this.#pendingLen > 0) this.#copy(this.#pendingLen, limit)
    const pbMask = (1 << this.#pb) - 1
    const lpMask = (1 << this.#lp) - 1
    const lc = this.#lc
    while (this.pos < limit) {
      const posState = this.pos & pbMask
      const state = this.#state
      if (this.#bit(this.#isMatch, (state << 4) + posState) === 0) {
        const prev = this.pos > this.dictStart ? out[this.pos - 1]! : 0
        const base = 0x300 * (((this.pos & lpMask) << lc) + (prev >>> (8 - lc)))
        let symbol = 1
        if (state >= 7) {
          if (this.#rep0 >= this.pos - this.dictStart) throw new CompressionError('lzma: match distance beyond the dictionary')
          let matchByte = out[this.pos - this.#rep0 - 1]!
          do {
            const matchBit = (matchByte >>> 7) & 1
            matchByte <<= 1
            const b = this.#bit(this.#literal, base + 0x100 + (matchBit << 8) + symbol)
            symbol = (symbol << 1) | b
            if (matchBit !== b) break
          } while (symbol < 0x100)
        }
        while (symbol < 0x100) symbol = (symbol << 1) | this.#bit(this.#literal, base + symbol)
        out[this.pos++] = symbol & 0xFF
        this.#state = state < 4 ? 0 : state < 10 ? state - 3 : state - 6
        continue
      }
      let len: number
      if (this.#bit(this.#isRep, state) === 0) {
        len = this.#length(this.#matchLen, posState)
        this.#state = state < 7 ? 7 : 10
        const dist = this.#distance(len)
        if (dist === 0xFFFFFFFF) return true
        this.#rep3 = this.#rep2; this.#rep2 = this.#rep1; this.#rep1 = this.#rep0; this.#rep0 = dist
      } else {
        if (this.pos === this.dictStart) throw new CompressionError('lzma: repeated match before any output')
        if (this.#bit(this.#isRepG0, state) === 0) {
          if (this.#bit(this.#isRep0Long, (state << 4) + posState) === 0) {
            this.#state = state < 7 ? 9 : 11
            if (this.#rep0 >= this.pos - this.dictStart) throw new CompressionError('lzma: match distance beyond the dictionary')
            out[this.pos] = out[this.pos - this.#rep0 - 1]!
            this.pos++
            continue
          }
        } else {
          let dist: number
          if (this.#bit(this.#isRepG1, state) === 0) {
            dist = this.#rep1
          } else {
            if (this.#bit(this.#isRepG2, state) === 0) {
              dist = this.#rep2
            } else {
              dist = this.#rep3
              this.#rep3 = this.#rep2
            }
            this.#rep2 = this.#rep1
          }
          this.#rep1 = this.#rep0
          this.#rep0 = dist
        }
        len = this.#length(this.#repLen, posState)
        this.#state = state < 7 ? 8 : 11
      }
      if (this.#rep0 >= this.pos - this.dictStart) throw new CompressionError('lzma: match distance beyond the dictionary')
      this.#copy(len + 2, limit)
    }
    return false
  }

  get hasPendingMatch (): boolean { return this.#pendingLen > 0 }
}

/**
 * MicroLZMA, as EROFS stores LZMA pclusters: an LZMA1 stream with no header
 * and no end marker whose first range-coder byte (always 0) is replaced by
 * the bitwise NOT of the lc/lp/pb properties byte. The decompressed size is
 * known from the filesystem's extent map; `outSize` bytes are produced.
 */
export function decodeMicroLzma (input: Uint8Array, outSize: number): Buffer {
  if (input.length < 5) throw new CompressionError('microlzma: stream is shorter than its header')
  const out = Buffer.allocUnsafe(outSize)
  const decoder = new LzmaDecoder(out)
  decoder.setProperties(parseLzmaProperties(~input[0]! & 0xFF))
  decoder.resetState()
  decoder.startRangeCoder(input, 1, input.length, false)
  decoder.decode(outSize)
  if (decoder.pos !== outSize) throw new CompressionError(`microlzma: stream ended after ${decoder.pos} of ${outSize} bytes`)
  return out
}
