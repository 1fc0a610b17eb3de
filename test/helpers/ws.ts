// WebSocket client checks shared by the listener and transport tests.
import WebSocket from 'ws';

/** HTTP status of a refused WebSocket upgrade (rejects when the upgrade is accepted). */
export function wsRefusal(url: string, protocols?: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.once('open', () => {
      ws.terminate();
      reject(new Error(`upgrade to ${url} unexpectedly accepted`));
    });
    ws.once('error', () => undefined);
  });
}
