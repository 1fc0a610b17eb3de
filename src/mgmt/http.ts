// Management HTTP API on a uWS App: JSON in, JSON out.
//
// uWS rules: a response must get an onAborted handler before the route handler returns
// without answering, and must never be written after it was aborted; writes made outside
// the route handler's synchronous part are corked.
import { STATUS_CODES } from 'node:http';
import type { Logger } from '../log/logger.js';
import type { Listener } from '../transport/types.js';
import {
  closeApp,
  listenExclusive,
  type Uws,
  type UwsHttpRequest,
  type UwsHttpResponse,
  type UwsListenSocket,
} from '../transport/uws.js';

export type HttpMethod = 'get' | 'post' | 'delete';

export interface HttpRequestInfo {
  query: URLSearchParams;
  /** Request body for POST / DELETE (null for GET or when empty). */
  body: Buffer | null;
}

export interface HttpResult {
  status: number;
  body: unknown;
}

export interface HttpRoute {
  method: HttpMethod;
  /** uWS pattern, e.g. '/status' or '/clients/:id'. */
  path: string;
  handler: (req: HttpRequestInfo) => HttpResult | Promise<HttpResult>;
}

export interface HttpOptions {
  uws: Uws;
  bind: string;
  /** 0 = ephemeral; Listener.port reports the bound port. */
  port: number;
  log: Logger;
  routes: HttpRoute[];
  /** Listener name in logs and errors (default 'http'). */
  name?: string;
  /** Larger request bodies get 413 (default 1 MiB). */
  maxBodyBytes?: number;
}

interface ResState {
  aborted: boolean;
  done: boolean;
}

function statusLine(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? 'Status'}`;
}

/** Raw query string. The JS fallback's getQuery() throws (new URL on a relative URL); its
 *  getUrl() includes the query, unlike the native one. */
function rawQuery(req: UwsHttpRequest): string {
  try {
    return req.getQuery() ?? '';
  } catch {
    const url = req.getUrl();
    const i = url.indexOf('?');
    return i < 0 ? '' : url.slice(i + 1);
  }
}

function toJson(body: unknown): string {
  return JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) ?? 'null';
}

export async function startHttp(opts: HttpOptions): Promise<Listener> {
  const { uws, log } = opts;
  const name = opts.name ?? 'http';
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024;
  const app = uws.App();

  const send = (res: UwsHttpResponse, st: ResState, status: number, body: unknown, headers?: Record<string, string>): void => {
    if (st.aborted || st.done) return;
    st.done = true;
    let json: string;
    try {
      json = toJson(body);
    } catch (err) {
      log.error('http.serialize_failed', { err });
      status = 500;
      json = toJson({ error: 'internal error' });
    }
    res.cork(() => {
      res.writeStatus(statusLine(status)).writeHeader('content-type', 'application/json');
      if (headers) for (const [k, v] of Object.entries(headers)) res.writeHeader(k, v);
      res.end(json);
    });
  };

  const run = (res: UwsHttpResponse, st: ResState, route: HttpRoute, info: HttpRequestInfo): void => {
    const fail = (err: unknown): void => {
      log.error('http.handler_failed', { method: route.method, path: route.path, err });
      send(res, st, 500, { error: 'internal error' });
    };
    let result: HttpResult | Promise<HttpResult>;
    try {
      result = route.handler(info);
    } catch (err) {
      fail(err);
      return;
    }
    if (result instanceof Promise || (typeof result === 'object' && result !== null && 'then' in result)) {
      Promise.resolve(result).then((r) => send(res, st, r.status, r.body), fail);
    } else {
      send(res, st, result.status, result.body);
    }
  };

  const methodsByPath = new Map<string, Set<string>>();
  for (const route of opts.routes) {
    const set = methodsByPath.get(route.path) ?? new Set<string>();
    set.add(route.method.toUpperCase());
    methodsByPath.set(route.path, set);
    const register = route.method === 'delete' ? app.del.bind(app) : route.method === 'post' ? app.post.bind(app) : app.get.bind(app);
    register(route.path, (res: UwsHttpResponse, req: UwsHttpRequest) => {
      const st: ResState = { aborted: false, done: false };
      res.onAborted(() => {
        st.aborted = true;
      });
      // req is only valid during this callback: read everything now.
      const query = new URLSearchParams(rawQuery(req));
      if (route.method === 'get') {
        run(res, st, route, { query, body: null });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.onData((ab: ArrayBuffer, isLast: boolean) => {
        if (st.done || st.aborted) return;
        size += ab.byteLength;
        if (size > maxBody) {
          send(res, st, 413, { error: 'request body too large' });
          return;
        }
        // The ArrayBuffer is neutered after the callback: copy.
        if (ab.byteLength > 0) chunks.push(Buffer.copyBytesFrom(new Uint8Array(ab)));
        if (isLast) run(res, st, route, { query, body: size > 0 ? Buffer.concat(chunks, size) : null });
      });
    });
  }
  // Known path, other method: 405; anything else: 404.
  for (const [path, methods] of methodsByPath) {
    app.any(path, (res: UwsHttpResponse) => {
      send(res, { aborted: false, done: false }, 405, { error: 'method not allowed' }, { allow: [...methods].join(', ') });
    });
  }
  app.any('/*', (res: UwsHttpResponse) => {
    send(res, { aborted: false, done: false }, 404, { error: 'not found' });
  });

  let ls: UwsListenSocket;
  let port: number;
  try {
    ({ socket: ls, port } = await listenExclusive(uws, app, { name, bind: opts.bind, port: opts.port }));
  } catch (err) {
    closeApp(uws, app, null);
    throw err;
  }
  log.info('listener.up', { listener: name, bind: opts.bind, port });
  let closed = false;
  return {
    name,
    port,
    close(): Promise<void> {
      if (!closed) {
        closed = true;
        // Closes keep-alive connections too; pending async responses see onAborted.
        closeApp(uws, app, ls);
        log.info('listener.down', { listener: name, port });
      }
      return Promise.resolve();
    },
  };
}
