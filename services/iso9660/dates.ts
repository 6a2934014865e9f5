/**
 * An ISO 9660 dec-datetime (ECMA-119 8.4.26.1: 16 ASCII digits "YYYYMMDDhhmmsscc"
 * and a signed offset from GMT in 15-minute steps) as a Date, or undefined when
 * unset (all zeros) or invalid. Every copy of an ISO carries the same one, so it
 * can date what we serve identically on every replica.
 */
export function decDateTime (field: Buffer): Date | undefined {
  if (field.length !== 17) return undefined
  const text = field.toString('latin1', 0, 16)
  if (!/^\d{16}$/.test(text) || /^0+$/.test(text)) return undefined
  const n = (from: number, to: number): number => Number(text.slice(from, to))
  const [year, month, day, hour, minute, second] = [n(0, 4), n(4, 6), n(6, 8), n(8, 10), n(10, 12), n(12, 14)]
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) return undefined
  const offsetMinutes = field.readInt8(16) * 15
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second) - offsetMinutes * 60_000)
}
