// Finding where a message body ends without changing a byte of it: a
// Content-Length countdown, or a chunked-coding state machine that follows
// chunk sizes, chunk data and trailers (RFC 9112 §7.1) so the proxy can
// forward the original bytes and still know when the message is over.
// Pure; fed slices of whatever the socket delivered.
import type { BodyFraming } from './parse';

/** The result of feeding bytes: how many belong to this body, whether it ended there, or why the framing is broken. */
export type Consumed = { used: number; done: boolean } | { error: string };

const MAX_SIZE_LINE = 1024;
const MAX_TRAILERS = 64 * 1024;

const enum State {
  Size,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  Trailer,
  TrailerLf,
  Done,
}

/** Tracks one body; see the file comment. */
export class BodyTracker {
  /** Body payload bytes seen so far (chunk data only, for chunked). */
  payload = 0;
  private remaining: number;
  private state: State;
  private size = 0;
  private sizeLine = 0;
  private sawDigit = false;
  private inExtension = false;
  private trailerLine = 0;
  private trailerBytes = 0;

  constructor(readonly framing: BodyFraming) {
    this.remaining = framing.type === 'length' ? framing.length : 0;
    this.state = framing.type === 'none' ? State.Done : State.Size;
  }

  get done(): boolean {
    return this.state === State.Done;
  }

  /** Feeds `buf[from..]`; says how many bytes are this body's. A 'close' body takes everything and ends only with the connection. */
  consume(buf: Buffer, from: number): Consumed {
    const avail = buf.length - from;
    if (this.state === State.Done) return { used: 0, done: true };
    switch (this.framing.type) {
      case 'none':
        return { used: 0, done: true };
      case 'close':
        this.payload += avail;
        return { used: avail, done: false };
      case 'length': {
        const used = Math.min(avail, this.remaining);
        this.remaining -= used;
        this.payload += used;
        if (this.remaining === 0) this.state = State.Done;
        return { used, done: this.remaining === 0 };
      }
      case 'chunked':
        return this.chunked(buf, from);
    }
  }

  private chunked(buf: Buffer, from: number): Consumed {
    let i = from;
    while (i < buf.length && this.state !== State.Done) {
      const c = buf[i]!;
      switch (this.state) {
        case State.Size: {
          i++;
          if (++this.sizeLine > MAX_SIZE_LINE) return { error: 'a chunk size line is longer than 1 KiB' };
          if (c === 0x0d) {
            if (!this.sawDigit) return { error: 'a chunk size line has no size' };
            this.state = State.SizeLf;
          } else if (this.inExtension) {
            // chunk extensions are forwarded as they are
          } else if (c === 0x3b /* ; */ || c === 0x20 || c === 0x09) {
            this.inExtension = true;
          } else {
            const d = hexDigit(c);
            if (d < 0) return { error: `a chunk size has the character ${JSON.stringify(String.fromCharCode(c))}` };
            this.size = this.size * 16 + d;
            this.sawDigit = true;
            if (this.size > Number.MAX_SAFE_INTEGER / 16) return { error: 'a chunk size is too large' };
          }
          break;
        }
        case State.SizeLf:
          i++;
          if (c !== 0x0a) return { error: 'a chunk size line does not end in CRLF' };
          this.sizeLine = 0;
          this.sawDigit = false;
          this.inExtension = false;
          if (this.size === 0) {
            this.state = State.Trailer;
            this.trailerLine = 0;
          } else {
            this.remaining = this.size;
            this.state = State.Data;
          }
          this.size = 0;
          break;
        case State.Data: {
          const n = Math.min(buf.length - i, this.remaining);
          this.remaining -= n;
          this.payload += n;
          i += n;
          if (this.remaining === 0) this.state = State.DataCr;
          break;
        }
        case State.DataCr:
          i++;
          if (c !== 0x0d) return { error: 'chunk data is longer than its size' };
          this.state = State.DataLf;
          break;
        case State.DataLf:
          i++;
          if (c !== 0x0a) return { error: 'chunk data does not end in CRLF' };
          this.state = State.Size;
          break;
        case State.Trailer:
          i++;
          if (++this.trailerBytes > MAX_TRAILERS) return { error: 'the trailers are larger than 64 KiB' };
          if (c === 0x0d) this.state = State.TrailerLf;
          else this.trailerLine++;
          break;
        case State.TrailerLf:
          i++;
          if (c !== 0x0a) return { error: 'a trailer line does not end in CRLF' };
          if (this.trailerLine === 0) this.state = State.Done;
          else {
            this.trailerLine = 0;
            this.state = State.Trailer;
          }
          break;
        default:
          break;
      }
    }
    return { used: i - from, done: this.state === State.Done };
  }
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
