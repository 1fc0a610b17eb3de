import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { PassThrough, Readable, Writable } from 'node:stream';

import {
  DUMMY_HASH,
  hashPassword,
  isValidEncodedHash,
  parseEncodedHash,
  verifyPassword,
  verifyPasswordSync,
} from '../src/auth/password-hash.js';
import { HashPool } from '../src/auth/hash-pool.js';
import {
  PasswordFileError,
  loadPasswordFile,
  parsePasswordFile,
  removeUser,
  upsertUser,
} from '../src/auth/password-file.js';
import { Acl, AclParseError, filterCovers, parseAcl } from '../src/auth/acl.js';
import { createAuthorizer, type AuthorizerConfig } from '../src/auth/authorizer.js';
import { runPasswd } from '../src/auth/passwd-cli.js';
import { Logger } from '../src/log/logger.js';
import type { Authorizer, ClientIdentity, Credentials } from '../src/auth/types.js';
import { tempDir } from './helpers/tmp.js';

const tmp = tempDir('fleetmq-auth-');

const HASH_RE = /^\$scrypt\$N=16384,r=8,p=1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/;

// ---------------------------------------------------------------------------
describe('password-hash', () => {
  test('hash round-trip, salted, string and Buffer input', async () => {
    const h1 = await hashPassword('s3cret');
    const h2 = await hashPassword(Buffer.from('s3cret'));
    assert.match(h1, HASH_RE);
    assert.match(h2, HASH_RE);
    assert.notEqual(h1, h2, 'a random salt makes each hash unique');
    assert.equal(await verifyPassword(Buffer.from('s3cret'), h1), true);
    assert.equal(await verifyPassword(Buffer.from('s3cret'), h2), true);
    assert.equal(await verifyPassword(Buffer.from('s3cret!'), h1), false);
    assert.equal(await verifyPassword(Buffer.from(''), h1), false);
    assert.equal(verifyPasswordSync(Buffer.from('s3cret'), h1), true);
    assert.equal(verifyPasswordSync(Buffer.from('S3cret'), h1), false);
    const p = parseEncodedHash(h1);
    assert.ok(p);
    assert.deepEqual([p.N, p.r, p.p, p.salt.length, p.hash.length], [16384, 8, 1, 16, 32]);
  });

  test('binary (non-UTF-8) passwords', async () => {
    const pw = Buffer.from([0xff, 0x00, 0xfe, 0x80]);
    const h = await hashPassword(pw);
    assert.equal(await verifyPassword(pw, h), true);
    assert.equal(await verifyPassword(Buffer.from([0xff, 0x00, 0xfe, 0x81]), h), false);
  });

  test('malformed encodings are rejected with false, never thrown', async () => {
    const good = await hashPassword('pw');
    const [, , params, salt, hash] = good.split('$') as [string, string, string, string, string];
    const bad: unknown[] = [
      '',
      'pw',
      'scrypt$N=16384,r=8,p=1$' + salt + '$' + hash,
      `$bcrypt$${params}$${salt}$${hash}`,
      `$scrypt$${params}$${salt}`,
      `$scrypt$${params}$${salt}$${hash}$`,
      `$scrypt$N=16385,r=8,p=1$${salt}$${hash}`, // not a power of two
      `$scrypt$N=1,r=8,p=1$${salt}$${hash}`,
      `$scrypt$N=16777216,r=8,p=1$${salt}$${hash}`, // too much memory
      `$scrypt$N=16384,r=0,p=1$${salt}$${hash}`,
      `$scrypt$N=16384,p=1,r=8$${salt}$${hash}`,
      `$scrypt$N=16384,r=8,p=1$${salt}$${hash.slice(0, -1)}`, // bad base64 length
      `$scrypt$N=16384,r=8,p=1$${salt}$${hash.replace(/=$/, '')}`, // unpadded
      `$scrypt$N=16384,r=8,p=1$${salt}$!!!${hash.slice(3)}`,
      `$scrypt$N=16384,r=8,p=1$$${hash}`, // empty salt
      `$scrypt$N=16384,r=8,p=1$${salt}$AAAA`, // key too short
      null,
      undefined,
      42,
      { toString: () => good },
    ];
    for (const enc of bad) {
      assert.equal(isValidEncodedHash(enc), false, `isValid ${String(enc)}`);
      assert.equal(await verifyPassword(Buffer.from('pw'), enc as string), false, `verify ${String(enc)}`);
      assert.equal(verifyPasswordSync(Buffer.from('pw'), enc as string), false, `verifySync ${String(enc)}`);
    }
    // Bad password argument types never throw either.
    assert.equal(await verifyPassword(undefined as unknown as Buffer, good), false);
    assert.equal(await verifyPassword(123 as unknown as Buffer, good), false);
    // A tampered hash fails to verify.
    const flipped = hash[0] === 'A' ? 'B' + hash.slice(1) : 'A' + hash.slice(1);
    assert.equal(await verifyPassword(Buffer.from('pw'), `$scrypt$${params}$${salt}$${flipped}`), false);
    // Non-canonical base64 (unused bits set in the last salt character) decodes to the
    // same bytes but is rejected.
    const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const last = B64.indexOf(salt[21] ?? '');
    const loose = salt.slice(0, 21) + B64[last | 1] + salt.slice(22);
    assert.deepEqual(Buffer.from(loose, 'base64'), Buffer.from(salt, 'base64'));
    assert.equal(await verifyPassword(Buffer.from('pw'), `$scrypt$${params}$${loose}$${hash}`), false);
    // The sanity check: the untouched string does verify.
    assert.equal(await verifyPassword(Buffer.from('pw'), good), true);
  });

  test('the dummy hash is well-formed but matches nothing obvious', async () => {
    assert.equal(isValidEncodedHash(DUMMY_HASH), true);
    assert.equal(await verifyPassword(Buffer.from(''), DUMMY_HASH), false);
  });
});

// ---------------------------------------------------------------------------
describe('hash pool', () => {
  test('verifies on a worker thread without blocking the event loop', async () => {
    const pool = new HashPool({ threads: 2 });
    try {
      const h = await hashPassword('pool-pw');
      let immediateFiredFirst = false;
      let settled = false;
      setImmediate(() => {
        immediateFiredFirst = !settled;
      });
      const [a, b, c] = await Promise.all([
        pool.verify(Buffer.from('pool-pw'), h).finally(() => (settled = true)),
        pool.verify(Buffer.from('nope'), h),
        pool.verify(Buffer.from('pool-pw'), 'garbage'),
      ]);
      assert.deepEqual([a, b, c], [true, false, false]);
      assert.equal(immediateFiredFirst, true, 'event loop kept turning during verification');
      assert.ok(pool.threads >= 1, 'a worker thread was started');
    } finally {
      await pool.destroy();
    }
    await assert.rejects(pool.verify(Buffer.from('x'), DUMMY_HASH), /destroyed/);
    await pool.destroy(); // idempotent
  });

  test('rejects a bad thread count', () => {
    assert.throws(() => new HashPool({ threads: 0 }), /hash_threads/);
    assert.throws(() => new HashPool({ threads: 1.5 }), /hash_threads/);
  });
});

// ---------------------------------------------------------------------------
describe('password file', () => {
  test('parses entries, comments, blank lines and CRLF', async () => {
    const h = await hashPassword('x');
    const text = `# users\n\nalice:${h}\r\n  # indented comment\nbob:${h}  \n`;
    const m = parsePasswordFile(text, 'pw.txt');
    assert.deepEqual([...m.keys()], ['alice', 'bob']);
    assert.equal(m.get('alice'), h);
    assert.equal(m.get('bob'), h);
  });

  test('parse errors name the file and line', async () => {
    const h = await hashPassword('x');
    const cases: Array<[string, number, RegExp]> = [
      [`alice:${h}\n# c\nnocolon\n`, 3, /username:hash/],
      [`alice:${h}\nbob:$scrypt$junk\n`, 2, /malformed password hash for user "bob"/],
      [`alice:${h}\n\nalice:${h}\n`, 3, /duplicate user "alice" \(first on line 1\)/],
      [`:${h}\n`, 1, /empty/],
    ];
    for (const [text, line, re] of cases) {
      assert.throws(
        () => parsePasswordFile(text, '/etc/fleetmq/passwd'),
        (err: unknown) => {
          assert.ok(err instanceof PasswordFileError);
          assert.equal(err.line, line);
          assert.equal(err.file, '/etc/fleetmq/passwd');
          assert.ok(err.message.startsWith(`/etc/fleetmq/passwd:${line}: `), err.message);
          assert.match(err.message, re);
          return true;
        },
      );
    }
  });

  test('load of a missing file names the file', async () => {
    const f = tmp.file('missing.passwd');
    await assert.rejects(loadPasswordFile(f), (e: Error) => e.message.includes(f));
  });

  test('upsertUser creates (0600), updates in place keeping comments; removeUser', async () => {
    const f = tmp.file('upsert.passwd');
    assert.equal(await upsertUser(f, 'alice', 'a1'), 'added');
    assert.equal((await stat(f)).mode & 0o777, 0o600);
    assert.equal(await upsertUser(f, 'bob', 'b1'), 'added');
    const before = await readFile(f, 'utf8');
    await writeFile(f, '# header comment\n' + before);
    assert.equal(await upsertUser(f, 'alice', 'a2'), 'updated');
    const text = await readFile(f, 'utf8');
    const lines = text.split('\n');
    assert.equal(lines[0], '# header comment');
    assert.match(lines[1] ?? '', /^alice:/);
    assert.match(lines[2] ?? '', /^bob:/);
    assert.equal(lines.length, 4, 'one trailing newline');
    const users = await loadPasswordFile(f);
    assert.equal(await verifyPassword(Buffer.from('a2'), users.get('alice') ?? ''), true);
    assert.equal(await verifyPassword(Buffer.from('a1'), users.get('alice') ?? ''), false);
    assert.equal(await verifyPassword(Buffer.from('b1'), users.get('bob') ?? ''), true);

    assert.equal(await removeUser(f, 'alice'), true);
    assert.equal(await removeUser(f, 'alice'), false);
    assert.deepEqual([...(await loadPasswordFile(f)).keys()], ['bob']);
    assert.match(await readFile(f, 'utf8'), /^# header comment\nbob:/);
    await assert.rejects(removeUser(tmp.file('nope.passwd'), 'x'), /nope\.passwd/);
    await assert.rejects(upsertUser(f, 'a:b', 'x'), /"a:b".*upsert\.passwd.*":"/);
  });

  test('upsertUser refuses to rewrite a corrupt file', async () => {
    const f = tmp.file('corrupt.passwd');
    await writeFile(f, 'alice:$scrypt$broken\n');
    await assert.rejects(upsertUser(f, 'bob', 'x'), (e: Error) => e.message.startsWith(`${f}:1:`));
    assert.equal(await readFile(f, 'utf8'), 'alice:$scrypt$broken\n', 'file left untouched');
  });
});

// ---------------------------------------------------------------------------
describe('ACL', () => {
  const who = (clientId: string, username?: string): ClientIdentity => ({ clientId, username });

  test('parse errors name the file and line', () => {
    const cases: Array<[string, number, RegExp]> = [
      ['allow publish all a/b\npermit publish all x\n', 2, /unknown effect "permit"/],
      ['# c\n\ndeny read all x\n', 3, /unknown action "read"/],
      ['allow all someone x\n', 1, /bad subject "someone"/],
      ['allow all user: x\n', 1, /bad subject "user:"/],
      ['allow all all\n', 1, /expected/],
      ['allow all all a/#/b\n', 1, /"#" must be the last level/],
      ['allow all all a/b+\n', 1, /whole level/],
      ['allow all all a/%u#\n', 1, /whole level/],
    ];
    for (const [text, line, re] of cases) {
      assert.throws(
        () => parseAcl(text, 'acl.conf'),
        (err: unknown) => {
          assert.ok(err instanceof AclParseError);
          assert.equal(err.line, line);
          assert.ok(err.message.startsWith(`acl.conf:${line}: `), err.message);
          assert.match(err.message, re);
          return true;
        },
      );
    }
  });

  test('parses rules; filters may contain spaces; comments and CRLF ignored', () => {
    const rules = parseAcl('# x\r\nallow  publish\tuser:alice  room 1/temp \r\ndeny all client:c1 #\n', 'f');
    assert.equal(rules.length, 2);
    assert.deepEqual(
      rules.map((r) => [r.effect, r.action, r.subject, r.filter, r.line]),
      [
        ['allow', 'publish', { kind: 'user', name: 'alice' }, 'room 1/temp', 2],
        ['deny', 'all', { kind: 'client', id: 'c1' }, '#', 3],
      ],
    );
  });

  test('filter coverage', () => {
    const yes: Array<[string, string]> = [
      ['sensors/#', 'sensors/+/temp'],
      ['sensors/#', 'sensors/#'],
      ['sensors/#', 'sensors'],
      ['sensors/#', 'sensors/a/b/c'],
      ['sensors/+/temp', 'sensors/+/temp'],
      ['sensors/+/temp', 'sensors/x/temp'],
      ['#', '#'],
      ['#', 'a/+/#'],
      ['+/+', '+/b'],
      ['a//b', 'a//b'],
      ['$SYS/#', '$SYS/broker/+'],
    ];
    const no: Array<[string, string]> = [
      ['sensors/+/temp', 'sensors/#'],
      ['sensors/+/temp', 'sensors/+/+'],
      ['sensors/+/temp', 'sensors/a/b/temp'],
      ['sensors/x/temp', 'sensors/+/temp'],
      ['sensors/+', 'sensors'],
      ['sensors/+', 'sensors/a/b'],
      ['sensors', 'sensors/#'],
      ['sensors/#', 'other/#'],
      ['a/b', '#'],
      ['+/b', '#'],
      ['+', '#'],
      ['+', '+/x'],
      ['#', '$SYS/broker'],
      ['+/broker', '$SYS/broker'],
      ['$SYS/+', '#'],
    ];
    for (const [r, s] of yes) assert.equal(filterCovers(r, s), true, `${r} covers ${s}`);
    for (const [r, s] of no) assert.equal(filterCovers(r, s), false, `${r} does not cover ${s}`);
  });

  test('first matching rule wins; default policy applies otherwise', () => {
    const rules = parseAcl(
      [
        'deny publish all sensors/secret/#',
        'allow publish all sensors/#',
        'allow subscribe user:alice sensors/#',
        'deny all user:alice #',
      ].join('\n'),
      'f',
    );
    const deny = new Acl(rules, 'deny');
    const allow = new Acl(rules, 'allow');
    const anon = who('c0');
    assert.equal(deny.canPublish(anon, 'sensors/secret/x'), false);
    assert.equal(deny.canPublish(anon, 'sensors/public/x'), true);
    assert.equal(deny.canPublish(anon, 'other'), false, 'default deny');
    assert.equal(allow.canPublish(anon, 'other'), true, 'default allow');
    assert.equal(allow.canPublish(anon, 'sensors/secret/deep/er'), false, 'earlier deny beats default allow');
    // alice: subscribe to sensors allowed by rule 3 before her blanket deny.
    const alice = who('c1', 'alice');
    assert.equal(allow.canSubscribe(alice, 'sensors/+/temp'), true);
    assert.equal(allow.canSubscribe(alice, 'other/x'), false, 'rule 4 denies');
    assert.equal(allow.canPublish(alice, 'sensors/a'), true, 'rule 2 before rule 4');
    assert.equal(allow.canSubscribe(who('c2', 'bob'), 'other/x'), true, 'bob: default');
    assert.equal(allow.decidingRule(alice, 'subscribe', 'other/x')?.line, 4);
    assert.equal(allow.decidingRule(who('c2', 'bob'), 'subscribe', 'other/x'), null);
    // The rule order decides: swap the two publish rules.
    const swapped = new Acl(parseAcl('allow publish all sensors/#\ndeny publish all sensors/secret/#', 'f'), 'deny');
    assert.equal(swapped.canPublish(anon, 'sensors/secret/x'), true);
  });

  test('publish vs subscribe vs all actions; user: and client: subjects', () => {
    const acl = new Acl(
      parseAcl('allow publish user:alice a/#\nallow subscribe client:dash a/#\nallow all all b/#', 'f'),
      'deny',
    );
    assert.equal(acl.canPublish(who('x', 'alice'), 'a/1'), true);
    assert.equal(acl.canSubscribe(who('x', 'alice'), 'a/1'), false);
    assert.equal(acl.canPublish(who('alice'), 'a/1'), false, 'client id is not a username');
    assert.equal(acl.canSubscribe(who('dash'), 'a/#'), true);
    assert.equal(acl.canPublish(who('dash'), 'a/1'), false);
    assert.equal(acl.canSubscribe(who('dash', 'alice'), 'a/+'), true);
    assert.equal(acl.canPublish(who('z'), 'b/c'), true);
    assert.equal(acl.canSubscribe(who('z'), 'b/#'), true);
  });

  test('subscribe coverage through the ACL, including $share', () => {
    const acl = new Acl(parseAcl('allow subscribe all sensors/#\nallow subscribe all fixed/+/temp', 'f'), 'deny');
    const w = who('c');
    assert.equal(acl.canSubscribe(w, 'sensors/+/temp'), true);
    assert.equal(acl.canSubscribe(w, 'fixed/+/temp'), true);
    assert.equal(acl.canSubscribe(w, 'fixed/#'), false);
    assert.equal(acl.canSubscribe(w, 'fixed/+/+'), false);
    assert.equal(acl.canSubscribe(w, '#'), false);
    assert.equal(acl.canSubscribe(w, '$share/g1/sensors/#'), true);
    assert.equal(acl.canSubscribe(w, '$share/g1/fixed/#'), false);
  });

  test('%u and %c placeholders; missing values never match', () => {
    const acl = new Acl(
      parseAcl('allow all all users/%u/#\nallow publish all devices/%c/state\nallow all all mixed/%u-%c', 'f'),
      'deny',
    );
    assert.equal(acl.canPublish(who('d1', 'alice'), 'users/alice/x'), true);
    assert.equal(acl.canSubscribe(who('d1', 'alice'), 'users/alice/#'), true);
    assert.equal(acl.canPublish(who('d1', 'alice'), 'users/bob/x'), false);
    assert.equal(acl.canSubscribe(who('d1', 'alice'), 'users/+/x'), false);
    assert.equal(acl.canPublish(who('d1', 'alice'), 'devices/d1/state'), true);
    assert.equal(acl.canPublish(who('d1', 'alice'), 'devices/d2/state'), false);
    assert.equal(acl.canPublish(who('d1', 'alice'), 'mixed/alice-d1'), true);
    // No username: %u rules never match, even for the literal or empty expansion.
    assert.equal(acl.canPublish(who('d1'), 'users//x'), false);
    assert.equal(acl.canPublish(who('d1'), 'users/%u/x'), false);
    assert.equal(acl.canPublish(who('d1'), 'users/undefined/x'), false);
    assert.equal(acl.canPublish(who('d1', ''), 'users//x'), false, 'empty username counts as missing');
    assert.equal(acl.canPublish(who('', 'alice'), 'devices//state'), false, 'empty client id counts as missing');
    assert.equal(acl.canPublish(who('d1'), 'devices/d1/state'), true, '%c still works without username');
  });

  test('+, # or / in client id / username cannot widen a rule', () => {
    const acl = new Acl(parseAcl('allow all all devices/%c/#\nallow all all users/%u/inbox', 'f'), 'deny');
    for (const id of ['+', '#', 'a/b', 'x+', '#y']) {
      const w = who(id);
      assert.equal(acl.canSubscribe(w, 'devices/#'), false, `id ${id}: devices/#`);
      assert.equal(acl.canSubscribe(w, `devices/${id}/#`), false, `id ${id}: own (tainted) prefix`);
      assert.equal(acl.canPublish(w, 'devices/other/x'), false, `id ${id}: devices/other/x`);
      assert.equal(acl.canPublish(w, `devices/${id}/x`), false, `id ${id}: literal`);
    }
    assert.equal(acl.canPublish(who('a/b'), 'devices/a/b/x'), false, '"/" must not create extra levels');
    for (const u of ['+', '#', 'a/b']) {
      assert.equal(acl.canSubscribe(who('c', u), 'users/+/inbox'), false, `user ${u}`);
      assert.equal(acl.canPublish(who('c', u), 'users/a/b/inbox'), false, `user ${u}`);
    }
    // Values are substituted once: a username of "%c" is not expanded to the client id.
    const acl2 = new Acl(parseAcl('allow publish all home/%u', 'f'), 'deny');
    assert.equal(acl2.canPublish(who('bob', '%c'), 'home/bob'), false);
    assert.equal(acl2.canPublish(who('bob', '%c'), 'home/%c'), true);
    // Sanity: an ordinary id does get access.
    assert.equal(acl.canPublish(who('dev7'), 'devices/dev7/x'), true);
  });

  test('a deny rule with an unsafe placeholder value fails closed', () => {
    const acl = new Acl(parseAcl('deny all all private/%c/#\nallow all all private/#', 'f'), 'deny');
    assert.equal(acl.canPublish(who('a'), 'private/a/x'), false);
    assert.equal(acl.canPublish(who('b'), 'private/a/x'), true);
    assert.equal(acl.canPublish(who('a/b'), 'private/a/b/x'), false, 'would escape the deny otherwise');
  });

  test('cached results stay per identity', () => {
    const acl = new Acl(parseAcl('allow publish all u/%u', 'f'), 'deny');
    assert.equal(acl.canPublish(who('c', 'alice'), 'u/alice'), true);
    assert.equal(acl.canPublish(who('c', 'bob'), 'u/alice'), false);
    assert.equal(acl.canPublish(who('c'), 'u/alice'), false);
    assert.equal(acl.canPublish(who('c', 'alice'), 'u/alice'), true);
    assert.equal(acl.canSubscribe(who('c', 'bob'), 'u/alice'), false, 'publish result not reused for subscribe');
    for (let i = 0; i < 2000; i++) acl.canPublish(who(`c${i}`, 'alice'), `u/${i % 3 ? 'alice' : 'x'}`);
    assert.equal(acl.canPublish(who('c1999', 'alice'), 'u/alice'), true);
    assert.equal(acl.canPublish(who('c1999', 'alice'), 'u/x'), false);
  });
});

// ---------------------------------------------------------------------------
describe('authorizer', () => {
  const creds = (c: Partial<Credentials>): Credentials => ({
    clientId: 'cl',
    username: undefined,
    password: undefined,
    certCommonName: null,
    ...c,
  });
  const baseCfg = (c: Partial<AuthorizerConfig>): AuthorizerConfig => ({
    allow_anonymous: false,
    password_file: null,
    acl_file: null,
    acl_default: 'deny',
    hash_threads: 2,
    cn_as_username: false,
    ...c,
  });
  const captureLog = (): { log: Logger; lines: Array<Record<string, unknown>> } => {
    const lines: Array<Record<string, unknown>> = [];
    return { log: new Logger('debug', {}, (l) => lines.push(JSON.parse(l) as Record<string, unknown>)), lines };
  };

  let pwFile: string;
  let aclFile: string;
  before(async () => {
    pwFile = tmp.file('authz.passwd');
    aclFile = tmp.file('authz.acl');
    await upsertUser(pwFile, 'alice', 'wonderland');
    await upsertUser(pwFile, 'bob', Buffer.from('builder'));
    await writeFile(aclFile, '# acl\nallow all all users/%u/#\nallow subscribe all public/#\ndeny all all #\n');
  });

  test('password file + pool: good, wrong, unknown, anonymous', async () => {
    const { log, lines } = captureLog();
    const a = await createAuthorizer(baseCfg({ password_file: pwFile }), log);
    try {
      assert.deepEqual(
        await a.authenticate(creds({ username: 'alice', password: Buffer.from('wonderland') })),
        { ok: true, username: 'alice' },
      );
      assert.deepEqual(
        await a.authenticate(creds({ username: 'bob', password: Buffer.from('builder') })),
        { ok: true, username: 'bob' },
      );
      assert.deepEqual(
        await a.authenticate(creds({ username: 'alice', password: Buffer.from('builder') })),
        { ok: false, reason: 'bad_credentials' },
      );
      assert.deepEqual(
        await a.authenticate(creds({ username: 'alice', password: undefined })),
        { ok: false, reason: 'bad_credentials' },
      );
      assert.deepEqual(
        await a.authenticate(creds({ username: 'mallory', password: Buffer.from('wonderland') })),
        { ok: false, reason: 'bad_credentials' },
      );
      assert.deepEqual(await a.authenticate(creds({})), { ok: false, reason: 'not_authorized' });
      // Many concurrent verifications all resolve correctly.
      const many = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          a.authenticate(creds({ username: 'alice', password: Buffer.from(i % 2 ? 'wonderland' : 'x') })),
        ),
      );
      assert.deepEqual(many.map((r) => r.ok), [false, true, false, true, false, true, false, true]);
      assert.equal(lines.some((l) => l.msg === 'auth.anonymous_allowed'), false);
      assert.ok(lines.some((l) => l.msg === 'auth.password_file_loaded' && l.users === 2));
      // No ACL file: everything allowed.
      assert.equal(a.canPublish({ clientId: 'cl', username: 'alice' }, 'any/topic'), true);
      assert.equal(a.canSubscribe({ clientId: 'cl', username: undefined }, '#'), true);
    } finally {
      await a.close();
    }
    await a.close(); // idempotent
    assert.deepEqual(
      await a.authenticate(creds({ username: 'alice', password: Buffer.from('wonderland') })),
      { ok: false, reason: 'not_authorized' },
      'after close verification is impossible and fails closed',
    );
  });

  test('allow_anonymous with a password file: anonymous ok, names still checked; warns once', async () => {
    const { log, lines } = captureLog();
    const a = await createAuthorizer(baseCfg({ password_file: pwFile, allow_anonymous: true }), log);
    try {
      assert.deepEqual(await a.authenticate(creds({})), { ok: true, username: undefined });
      assert.deepEqual(
        await a.authenticate(creds({ username: 'alice', password: Buffer.from('nope') })),
        { ok: false, reason: 'bad_credentials' },
      );
      assert.deepEqual(
        await a.authenticate(creds({ username: 'alice', password: Buffer.from('wonderland') })),
        { ok: true, username: 'alice' },
      );
      const warns = lines.filter((l) => l.msg === 'auth.anonymous_allowed');
      assert.equal(warns.length, 1);
      assert.equal(warns[0]?.level, 'warn');
    } finally {
      await a.close();
    }
  });

  test('no password file: usernames accepted only when anonymous is allowed', async () => {
    const open = await createAuthorizer(baseCfg({ allow_anonymous: true }), captureLog().log);
    const { log, lines } = captureLog();
    const closed = await createAuthorizer(baseCfg({ allow_anonymous: false }), log);
    try {
      assert.deepEqual(await open.authenticate(creds({ username: 'who', password: Buffer.from('x') })), {
        ok: true,
        username: 'who',
      });
      assert.deepEqual(await open.authenticate(creds({})), { ok: true, username: undefined });
      assert.deepEqual(await closed.authenticate(creds({ username: 'who', password: Buffer.from('x') })), {
        ok: false,
        reason: 'not_authorized',
      });
      assert.deepEqual(await closed.authenticate(creds({})), { ok: false, reason: 'not_authorized' });
      assert.ok(lines.some((l) => l.msg === 'auth.no_credentials_source'));
    } finally {
      await open.close();
      await closed.close();
    }
  });

  test('certificate CN as username', async () => {
    const a = await createAuthorizer(baseCfg({ password_file: pwFile, cn_as_username: true }), captureLog().log);
    const b = await createAuthorizer(baseCfg({ password_file: pwFile, cn_as_username: false }), captureLog().log);
    try {
      assert.deepEqual(
        await a.authenticate(creds({ certCommonName: 'device-42', username: 'ignored', password: undefined })),
        { ok: true, username: 'device-42' },
      );
      assert.deepEqual(await a.authenticate(creds({ certCommonName: 'device-42' })), { ok: true, username: 'device-42' });
      // Without a CN the password file still applies.
      assert.deepEqual(await a.authenticate(creds({})), { ok: false, reason: 'not_authorized' });
      // cn_as_username off: the CN is ignored.
      assert.deepEqual(await b.authenticate(creds({ certCommonName: 'device-42' })), {
        ok: false,
        reason: 'not_authorized',
      });
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('ACL consulted for publish/subscribe', async () => {
    const a: Authorizer = await createAuthorizer(
      baseCfg({ password_file: pwFile, acl_file: aclFile, acl_default: 'allow' }),
      captureLog().log,
    );
    try {
      const alice = { clientId: 'c1', username: 'alice' };
      assert.equal(a.canPublish(alice, 'users/alice/x'), true);
      assert.equal(a.canPublish(alice, 'users/bob/x'), false);
      assert.equal(a.canSubscribe(alice, 'public/+'), true);
      assert.equal(a.canPublish(alice, 'public/x'), false);
      assert.equal(a.canSubscribe({ clientId: 'c2', username: undefined }, 'users/+/x'), false);
    } finally {
      await a.close();
    }
  });

  test('bad files fail creation with file and line', async () => {
    const badAcl = tmp.file('bad.acl');
    await writeFile(badAcl, 'allow all all ok\nallow all all bad/#/x\n');
    await assert.rejects(
      createAuthorizer(baseCfg({ acl_file: badAcl }), captureLog().log),
      (e: Error) => e.message.startsWith(`${badAcl}:2:`),
    );
    const badPw = tmp.file('bad.passwd');
    await writeFile(badPw, '# ok\nalice\n');
    await assert.rejects(
      createAuthorizer(baseCfg({ password_file: badPw }), captureLog().log),
      (e: Error) => e.message.startsWith(`${badPw}:2:`),
    );
    await assert.rejects(
      createAuthorizer(baseCfg({ password_file: tmp.file('absent.passwd') }), captureLog().log),
      /absent\.passwd/,
    );
  });
});

// ---------------------------------------------------------------------------
describe('passwd cli', () => {
  class Sink extends Writable {
    text = '';
    override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
      this.text += chunk.toString();
      cb();
    }
  }
  const io = (stdinLines: string[] | Readable = []) => ({
    stdin: Array.isArray(stdinLines) ? Readable.from(stdinLines) : stdinLines,
    stdout: new Sink(),
    stderr: new Sink(),
  });
  const check = async (file: string, user: string, pw: string): Promise<boolean> =>
    verifyPassword(Buffer.from(pw), (await loadPasswordFile(file)).get(user) ?? '');

  test('piped stdin: one line sets the password; creates the file 0600', async () => {
    const f = tmp.file('cli1.passwd');
    const s = io(['pass word\r\n', 'second line ignored\n']);
    assert.equal(await runPasswd([f, 'alice'], s), 0, s.stderr.text);
    assert.equal((await stat(f)).mode & 0o777, 0o600);
    assert.equal(await check(f, 'alice', 'pass word'), true);
    // Data split across chunks, no trailing newline.
    const s2 = io(['ch', 'unk', 'ed']);
    assert.equal(await runPasswd([f, 'bob'], s2), 0, s2.stderr.text);
    assert.equal(await check(f, 'bob', 'chunked'), true);
    assert.equal(await check(f, 'alice', 'pass word'), true, 'alice kept');
  });

  test('-b batch mode, update, -D delete', async () => {
    const f = tmp.file('cli2.passwd');
    assert.equal(await runPasswd(['-b', 'first', f, 'carol'], io()), 0);
    assert.equal(await check(f, 'carol', 'first'), true);
    assert.equal(await runPasswd([f, 'carol', '-b', 'second'], io()), 0, 'options anywhere');
    assert.equal(await check(f, 'carol', 'second'), true);
    assert.equal(await check(f, 'carol', 'first'), false);
    assert.equal(await runPasswd(['-b', 'x', f, 'dave'], io()), 0);

    assert.equal(await runPasswd(['-D', f, 'carol'], io()), 0);
    assert.deepEqual([...(await loadPasswordFile(f)).keys()], ['dave']);
    const s = io();
    assert.equal(await runPasswd(['-D', f, 'carol'], s), 1);
    assert.match(s.stderr.text, /user "carol" not found in .*cli2\.passwd/);
    const s2 = io();
    assert.equal(await runPasswd(['-D', tmp.file('none.passwd'), 'x'], s2), 1);
    assert.match(s2.stderr.text, /none\.passwd/);
  });

  test('errors: usage, empty password, bad username, corrupt file', async () => {
    const f = tmp.file('cli3.passwd');
    for (const args of [[], [f], [f, 'a', 'b'], ['-x', f, 'a'], ['-b'], ['-D', '-b', 'p', f, 'a']]) {
      const s = io();
      assert.equal(await runPasswd(args, s), 2, `args ${JSON.stringify(args)}`);
      assert.match(s.stderr.text, /usage:/);
    }
    const s1 = io([]);
    assert.equal(await runPasswd([f, 'alice'], s1), 1, 'EOF without a password');
    assert.match(s1.stderr.text, /no password given for user "alice"; .*cli3\.passwd not changed/);
    const s2 = io(['\n']);
    assert.equal(await runPasswd([f, 'alice'], s2), 1);
    assert.match(s2.stderr.text, /empty password/);
    const s3 = io();
    assert.equal(await runPasswd(['-b', 'x', f, 'a:b'], s3), 1);
    assert.match(s3.stderr.text, /invalid user "a:b" for .*cli3\.passwd/);
    await assert.rejects(stat(f), { code: 'ENOENT' }, 'nothing created on failure');
    await writeFile(f, 'garbage line\n');
    const s4 = io();
    assert.equal(await runPasswd(['-b', 'x', f, 'alice'], s4), 1);
    assert.ok(s4.stderr.text.includes(`${f}:1:`), s4.stderr.text);
    const s5 = io();
    assert.equal(await runPasswd(['--', f, '-dash-user'], io(['pw\n'])), 1, 'corrupt file still refused');
    assert.equal(await runPasswd(['--help'], s5), 0);
    assert.match(s5.stdout.text, /usage:/);
  });

  test('TTY: prompts twice with echo off; mismatch refused', async () => {
    const fakeTty = (input: string) => {
      const t = new PassThrough() as PassThrough & { isTTY: boolean; isRaw: boolean; setRawMode(m: boolean): void };
      const modes: boolean[] = [];
      t.isTTY = true;
      t.isRaw = false;
      t.setRawMode = (m: boolean) => {
        t.isRaw = m;
        modes.push(m);
      };
      t.end(input);
      return { t, modes };
    };
    const f = tmp.file('cli4.passwd');
    const ok = fakeTty('abc\u007fd\rabd\r');
    const s = io(ok.t);
    assert.equal(await runPasswd([f, 'erin'], s), 0, s.stderr.text);
    assert.match(s.stderr.text, /Password: \nReenter password: \n/);
    assert.equal(s.stderr.text.includes('abd'), false, 'no echo');
    assert.deepEqual(ok.modes, [true, false, true, false]);
    assert.equal(await check(f, 'erin', 'abd'), true, 'backspace honoured');

    const bad = fakeTty('one\rtwo\r');
    const s2 = io(bad.t);
    assert.equal(await runPasswd([f, 'erin'], s2), 1);
    assert.match(s2.stderr.text, /passwords do not match/);
    assert.equal(await check(f, 'erin', 'abd'), true, 'unchanged');

    const cancel = fakeTty('abc\u0003');
    assert.equal(await runPasswd([f, 'frank'], io(cancel.t)), 1);
    assert.equal((await loadPasswordFile(f)).has('frank'), false);
  });
});
