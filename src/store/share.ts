// Which worker a recovered session goes to (FNV-1a of the client id): the supervisor and
// each worker compute the same, so that a worker reads its own share of the store.
export function shareOf(clientId: string, workers: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < clientId.length; i++) h = Math.imul(h ^ clientId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % workers;
}
