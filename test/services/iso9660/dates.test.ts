import t from 'tap'
import { decDateTime } from '../../../services/iso9660/dates.ts'

const field = (digits: string, offset: number): Buffer => Buffer.concat([Buffer.from(digits, 'latin1'), Buffer.from([offset & 0xff])])

t.test('dec-datetime: GMT offsets in 15-minute steps, unset and invalid values', async t => {
  t.equal(decDateTime(field('2025010100000000', 0))?.toISOString(), '2025-01-01T00:00:00.000Z')
  t.equal(decDateTime(field('2025061512304500', 8))?.toISOString(), '2025-06-15T10:30:45.000Z', '+02:00 is two hours ahead of GMT')
  t.equal(decDateTime(field('2025061512304500', -20))?.toISOString(), '2025-06-15T17:30:45.000Z', '-05:00')
  t.equal(decDateTime(field('0000000000000000', 0)), undefined, 'unset')
  t.equal(decDateTime(field('2025133100000000', 0)), undefined, 'month 13')
  t.equal(decDateTime(field('20250101000000 0', 0)), undefined, 'not digits')
  t.equal(decDateTime(Buffer.alloc(7)), undefined, 'wrong length')
})
