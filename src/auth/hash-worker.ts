// Piscina worker: verifies one password per task on the worker thread itself.
import { verifyPasswordSync } from './password-hash.js';

export interface VerifyTask {
  password: Uint8Array;
  encoded: string;
}

export default function verify(task: VerifyTask): boolean {
  if (task === null || typeof task !== 'object') return false;
  return verifyPasswordSync(task.password, task.encoded);
}
