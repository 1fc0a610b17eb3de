export interface Credentials {
  clientId: string;
  username: string | undefined;
  password: Buffer | undefined;
  certCommonName: string | null;
}

export type AuthResult =
  | { ok: true; username: string | undefined }
  /** bad_credentials → 0x86 / 4; not_authorized → 0x87 / 5 */
  | { ok: false; reason: 'bad_credentials' | 'not_authorized' };

export interface ClientIdentity {
  clientId: string;
  username: string | undefined;
}

export interface Authorizer {
  authenticate(c: Credentials): Promise<AuthResult>;
  canPublish(who: ClientIdentity, topic: string): boolean;
  canSubscribe(who: ClientIdentity, filter: string): boolean;
  close(): Promise<void>;
}
