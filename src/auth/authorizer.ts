// The broker's Authorizer: password file + scrypt verification on a worker pool,
// TLS client-certificate CN as username, and the ACL file.
import type { AuthConfig } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import { loadAclFile, type Acl } from './acl.js';
import { HashPool } from './hash-pool.js';
import { loadPasswordFile } from './password-file.js';
import { DUMMY_HASH } from './password-hash.js';
import type { AuthResult, Authorizer, ClientIdentity, Credentials } from './types.js';

export type AuthorizerConfig = AuthConfig & { cn_as_username: boolean };

class FileAuthorizer implements Authorizer {
  private closing: Promise<void> | null = null;

  constructor(
    private readonly cfg: AuthorizerConfig,
    private readonly log: Logger,
    private readonly users: ReadonlyMap<string, string> | null,
    private readonly pool: HashPool | null,
    private readonly acl: Acl | null,
  ) {}

  async authenticate(c: Credentials): Promise<AuthResult> {
    // The TLS layer has already verified the certificate against the CA.
    if (this.cfg.cn_as_username && c.certCommonName) {
      return { ok: true, username: c.certCommonName };
    }
    if (c.username === undefined) {
      if (this.cfg.allow_anonymous) return { ok: true, username: undefined };
      this.log.debug('auth.rejected', { clientId: c.clientId, reason: 'anonymous_not_allowed' });
      return { ok: false, reason: 'not_authorized' };
    }
    if (!this.users || !this.pool) {
      // No password file: a username proves nothing, so it is anonymous-with-name.
      if (this.cfg.allow_anonymous) return { ok: true, username: c.username };
      this.log.debug('auth.rejected', { clientId: c.clientId, username: c.username, reason: 'no_password_file' });
      return { ok: false, reason: 'not_authorized' };
    }
    const stored = this.users.get(c.username);
    // Unknown users are checked against a dummy hash so they take as long as wrong passwords.
    let ok: boolean;
    try {
      ok = await this.pool.verify(c.password ?? Buffer.alloc(0), stored ?? DUMMY_HASH);
    } catch (err) {
      this.log.error('auth.verify_failed', { clientId: c.clientId, username: c.username, err });
      return { ok: false, reason: 'not_authorized' };
    }
    if (ok && stored !== undefined && c.password !== undefined) return { ok: true, username: c.username };
    this.log.debug('auth.rejected', {
      clientId: c.clientId,
      username: c.username,
      reason: stored === undefined ? 'unknown_user' : 'bad_password',
    });
    return { ok: false, reason: 'bad_credentials' };
  }

  canPublish(who: ClientIdentity, topic: string): boolean {
    return this.acl ? this.acl.canPublish(who, topic) : true;
  }

  canSubscribe(who: ClientIdentity, filter: string): boolean {
    return this.acl ? this.acl.canSubscribe(who, filter) : true;
  }

  close(): Promise<void> {
    this.closing ??= this.pool ? this.pool.destroy() : Promise.resolve();
    return this.closing;
  }
}

/** Loads the password and ACL files (errors name the file and line) and starts the hash pool. */
export async function createAuthorizer(cfg: AuthorizerConfig, log: Logger): Promise<Authorizer> {
  const users = cfg.password_file ? await loadPasswordFile(cfg.password_file) : null;
  const acl = cfg.acl_file ? await loadAclFile(cfg.acl_file, cfg.acl_default) : null;
  const pool = users ? new HashPool({ threads: cfg.hash_threads }) : null;

  if (users) log.info('auth.password_file_loaded', { file: cfg.password_file, users: users.size });
  if (acl) log.info('auth.acl_loaded', { file: cfg.acl_file, rules: acl.rules.length, default: cfg.acl_default });
  if (cfg.allow_anonymous) {
    log.warn('auth.anonymous_allowed', {
      detail: users
        ? 'clients without a username are accepted'
        : 'no password file: every client is accepted, usernames are not checked',
    });
  } else if (!users && !cfg.cn_as_username) {
    log.warn('auth.no_credentials_source', {
      detail: 'allow_anonymous is false and no password_file or cn_as_username is set: every connection will be refused',
    });
  }
  return new FileAuthorizer(cfg, log, users, pool, acl);
}
