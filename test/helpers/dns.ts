// A tiny authoritative DNS server on a loopback UDP port, for discovery tests without the
// internet: answers SRV and A queries from records the test sets (and changes) while it
// runs; any other name or type gets an empty NOERROR answer (ENODATA to node:dns).
// Minimal RFC 1035 encoding: one question per query, answers with a pointer to it.
import { createSocket, type Socket } from 'node:dgram';
import { after, before } from 'node:test';

export interface SrvRecord { priority: number; weight: number; port: number; target: string }

const T_A = 1;
const T_SRV = 33;

function encodeName(name: string): Buffer {
  const parts = name.replace(/\.$/, '').split('.').filter((p) => p !== '');
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'ascii')])), Buffer.from([0])]);
}

/** The question's name (lower case), type and the end of the question section. */
function parseQuestion(q: Buffer): { name: string; type: number; end: number } | null {
  let i = 12;
  const labels: string[] = [];
  while (i < q.length) {
    const n = q[i]!;
    if (n === 0) break;
    if (n > 63) return null; // no compression in questions
    labels.push(q.subarray(i + 1, i + 1 + n).toString('ascii').toLowerCase());
    i += 1 + n;
  }
  if (i + 5 > q.length) return null;
  return { name: labels.join('.'), type: q.readUInt16BE(i + 1), end: i + 5 };
}

export class TestDns {
  readonly srv = new Map<string, SrvRecord[]>();
  readonly a = new Map<string, string[]>();
  /** Queries answered, as "type name". */
  readonly queries: string[] = [];
  private sock: Socket | null = null;
  port = 0;

  async start(): Promise<this> {
    const s = createSocket('udp4');
    s.on('message', (q, rinfo) => {
      const r = this.answer(q);
      if (r) s.send(r, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    this.sock = s;
    this.port = s.address().port;
    return this;
  }

  /** `127.0.0.1:PORT`, for Resolver.setServers / cluster.dns_server. */
  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  private answer(q: Buffer): Buffer | null {
    if (q.length < 12) return null;
    const question = parseQuestion(q);
    if (!question) return null;
    const { name, type, end } = question;
    this.queries.push(`${type} ${name}`);
    const answers: Buffer[] = [];
    const rr = (t: number, rdata: Buffer): Buffer => {
      const h = Buffer.alloc(12);
      h.writeUInt16BE(0xc00c, 0); // the question's name
      h.writeUInt16BE(t, 2);
      h.writeUInt16BE(1, 4); // IN
      h.writeUInt32BE(0, 6); // TTL 0: nothing cached
      h.writeUInt16BE(rdata.length, 10);
      return Buffer.concat([h, rdata]);
    };
    if (type === T_SRV) {
      for (const r of this.srv.get(name) ?? []) {
        const d = Buffer.alloc(6);
        d.writeUInt16BE(r.priority, 0);
        d.writeUInt16BE(r.weight, 2);
        d.writeUInt16BE(r.port, 4);
        answers.push(rr(T_SRV, Buffer.concat([d, encodeName(r.target)])));
      }
    } else if (type === T_A) {
      for (const ip of this.a.get(name) ?? []) answers.push(rr(T_A, Buffer.from(ip.split('.').map(Number))));
    }
    const h = Buffer.alloc(12);
    q.copy(h, 0, 0, 2); // id
    h.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100), 2); // QR, AA, RD copied, NOERROR
    h.writeUInt16BE(1, 4);
    h.writeUInt16BE(answers.length, 6);
    return Buffer.concat([h, q.subarray(12, end), ...answers]);
  }

  async stop(): Promise<void> {
    const s = this.sock;
    this.sock = null;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** A TestDns for a describe block: started in `before`, stopped in `after`. Read `.dns` inside tests. */
export function useDns(): { readonly dns: TestDns } {
  let d: TestDns | null = null;
  before(async () => {
    d = await new TestDns().start();
  });
  after(() => d?.stop());
  return {
    get dns(): TestDns {
      if (!d) throw new Error('the DNS server is not started (used outside its describe?)');
      return d;
    },
  };
}
