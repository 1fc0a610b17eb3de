// Builders for MQTT packets in tests: raw bytes (for frames mqtt-packet would refuse to
// generate, or where every byte matters) and mqtt-packet objects for RawClient.send().
import type { IPublishPacket, Packet } from 'mqtt-packet';

/** Variable Byte Integer (remaining length, property length, ...), minimally encoded. */
export function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return out;
}

/** `varint` as a Buffer. */
export const varintBuffer = (n: number): Buffer => Buffer.from(varint(n));

/** Two Byte Integer, big-endian. */
export const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff];

/** Four Byte Integer, big-endian. */
export const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

/** A length-prefixed field: a string as UTF-8, or raw bytes (which may be ill-formed on purpose). */
export function lenPrefixed(x: string | Buffer | number[]): number[] {
  const body = typeof x === 'string' ? [...Buffer.from(x, 'utf8')] : [...x];
  return [...u16(body.length), ...body];
}

/** A whole packet: first byte, remaining length, then the body parts. */
export function frame(b0: number, ...parts: (Buffer | number[])[]): Buffer {
  const body = Buffer.concat(parts.map((p) => Buffer.from(p)));
  return Buffer.concat([Buffer.from([b0]), varintBuffer(body.length), body]);
}

/** A PUBLISH for RawClient.send(): not retained, no DUP, unless `extra` says otherwise. */
export function publishPacket(
  topic: string, payload: string, qos: 0 | 1 | 2, messageId?: number, extra: Partial<IPublishPacket> = {},
): Packet {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain: false, dup: false, messageId, ...extra } as Packet;
}
