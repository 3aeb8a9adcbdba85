/**
 * Watches the MQTT framing of an incoming byte stream (fixed header byte + "remaining length" varint) without
 * decoding packets, so an oversized packet is refused as soon as its length is known, before the parser buffers it.
 * Costs a few byte reads per packet; packet bodies are skipped in O(1) per chunk.
 */
const HEADER = 0;
const LENGTH = 1;
const BODY = 2;

export const FRAME_OK = 0;
export const FRAME_TOO_LARGE = 1;
export const FRAME_MALFORMED = 2;
export type FrameVerdict = typeof FRAME_OK | typeof FRAME_TOO_LARGE | typeof FRAME_MALFORMED;

export class FrameGuard {
  private state = HEADER;
  private remaining = 0;
  private lenValue = 0;
  private lenMul = 1;
  private lenBytes = 0;

  constructor(private readonly maxRemainingLength: number) {}

  /** True when the bytes fed so far end exactly at a packet boundary (no partial packet pending). */
  atBoundary(): boolean {
    return this.state === HEADER;
  }

  /** Feeds the next chunk. After a verdict other than FRAME_OK the stream must be dropped. */
  feed(chunk: Buffer): FrameVerdict {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.state === BODY) {
        const take = Math.min(this.remaining, n - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = HEADER;
      } else if (this.state === HEADER) {
        i++;
        this.state = LENGTH;
        this.lenValue = 0;
        this.lenMul = 1;
        this.lenBytes = 0;
      } else {
        const b = chunk[i++] as number;
        this.lenValue += (b & 0x7f) * this.lenMul;
        this.lenMul *= 128;
        this.lenBytes++;
        if ((b & 0x80) !== 0) {
          if (this.lenBytes >= 4) return FRAME_MALFORMED;
          continue;
        }
        if (this.lenValue > this.maxRemainingLength) return FRAME_TOO_LARGE;
        this.remaining = this.lenValue;
        this.state = this.remaining === 0 ? HEADER : BODY;
      }
    }
    return FRAME_OK;
  }
}
