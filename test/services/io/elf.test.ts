import t from 'tap'
import { isElf } from '../../../services/io/elf.ts'

t.test('an ELF header, nothing else', async t => {
  t.ok(isElf(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1])))
  t.ok(isElf(new Uint8Array([0x7f, 0x45, 0x4c, 0x46])))
  t.notOk(isElf(Buffer.from('#!/bin/sh\n')))
  t.notOk(isElf(Buffer.from([0x7f, 0x45, 0x4c])), 'too short')
  t.notOk(isElf(Buffer.alloc(0)))
})
