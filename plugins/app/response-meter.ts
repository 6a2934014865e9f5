import type { FastifyReply, FastifyRequest } from 'fastify'

/** What one response cost, measured on the socket: an aborted download counts what was sent. */
export interface ResponseMeasure {
  bytes: number
  durationMs: number
  /** The client left before the last byte. */
  aborted: boolean
  /** The status sent; 499 (nginx's "client closed request") when the client left before one was. */
  status: number
}

export const CLIENT_CLOSED_REQUEST = 499

/** Calls `done` once the response is over, complete or not. */
export function meterResponse (request: FastifyRequest, reply: FastifyReply, done: (measure: ResponseMeasure) => void): void {
  const startedAt = process.hrtime.bigint()
  const bytesBefore = request.raw.socket?.bytesWritten ?? 0
  // 'close' fires after the last byte and when the client leaves early; onResponse only on the former.
  reply.raw.once('close', function responseOver () {
    done({
      bytes: Math.max(0, (request.raw.socket?.bytesWritten ?? bytesBefore) - bytesBefore),
      durationMs: Number(process.hrtime.bigint() - startedAt) / 1e6,
      aborted: !reply.raw.writableEnded,
      status: reply.raw.headersSent ? reply.raw.statusCode : CLIENT_CLOSED_REQUEST
    })
  })
}
