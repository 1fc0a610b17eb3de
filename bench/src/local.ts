// Small helpers of the standalone bench tools (accept-spread, broker-spread, cross-worker)
// that start things on loopback: flags given as comma lists, and GET of a JSON endpoint.
// Free ports: freePort in ./compare/brokers.ts.

/** The comma-separated values of flag `name` (or of `def`). */
export function list(argv: string[], name: string, def: string): string[] {
  const i = argv.indexOf(name);
  const v = i >= 0 ? argv[i + 1] : undefined;
  return (v ?? def).split(',').filter((s) => s.length > 0);
}

/** A positive number given as flag `name`. */
export function num(argv: string[], name: string, def: number): number {
  const v = Number(list(argv, name, String(def))[0]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
  return v;
}

/** Positive integers given as a comma list. */
export function ints(argv: string[], name: string, def: string): number[] {
  const xs = list(argv, name, def).map(Number);
  for (const x of xs) if (!Number.isInteger(x) || x <= 0) throw new Error(`${name}: positive integers, comma-separated`);
  return xs;
}

/** GET http://127.0.0.1:port/path; the body parsed as JSON when it is JSON, else the text. */
export async function getJson(port: number, path: string, timeoutMs = 5_000): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, body };
}
