// ACL file (documented in docs/auth.md): one rule per line,
//   allow|deny  publish|subscribe|all  user:<name>|client:<id>|all  <topic filter>
// `#` at the start of a line is a comment. The first rule matching the action,
// the identity and the topic decides; the default policy applies otherwise.
//
// Filters may use `+`, `#` and the placeholders `%u` (username) and `%c` (client
// id). A placeholder whose value is missing or empty never matches. A value
// containing `+`, `#` or `/` would widen the rule, so such a value makes an
// `allow` rule non-matching and a `deny` rule match (fail closed).
import { readFile } from 'node:fs/promises';
import type { ClientIdentity } from './types.js';

export type AclEffect = 'allow' | 'deny';
export type AclAction = 'publish' | 'subscribe';

export type AclSubject =
  | { kind: 'user'; name: string }
  | { kind: 'client'; id: string }
  | { kind: 'all' };

export interface AclRule {
  effect: AclEffect;
  action: AclAction | 'all';
  subject: AclSubject;
  /** The filter as written (placeholders unexpanded). */
  filter: string;
  /** `filter` split on `/`. */
  levels: readonly string[];
  /** True when some level contains %u or %c. */
  dynamic: boolean;
  /** 1-based line in the source file. */
  line: number;
}

export class AclParseError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    detail: string,
  ) {
    super(`${file}:${line}: ${detail}`);
    this.name = 'AclParseError';
  }
}

const RULE_RE = /^(\S+)\s+(\S+)\s+(\S+)\s+(.+?)\s*$/;
const PLACEHOLDER_RE = /%[uc]/g;

/** Problem with a filter's wildcard syntax, or null. */
function filterProblem(levels: readonly string[]): string | null {
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i] as string;
    if (l === '#' && i !== levels.length - 1) return '"#" must be the last level';
    if (l !== '#' && l !== '+' && (l.includes('#') || l.includes('+'))) {
      return '"+" and "#" must occupy a whole level';
    }
  }
  return null;
}

export function parseAcl(text: string, file: string): AclRule[] {
  const rules: AclRule[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const m = RULE_RE.exec(trimmed);
    if (!m) throw new AclParseError(file, line, 'expected "allow|deny publish|subscribe|all user:<name>|client:<id>|all <filter>"');
    const [, effect, action, who, filter] = m as unknown as [string, string, string, string, string];
    if (effect !== 'allow' && effect !== 'deny') {
      throw new AclParseError(file, line, `unknown effect "${effect}" (expected allow or deny)`);
    }
    if (action !== 'publish' && action !== 'subscribe' && action !== 'all') {
      throw new AclParseError(file, line, `unknown action "${action}" (expected publish, subscribe or all)`);
    }
    let subject: AclSubject;
    if (who === 'all') subject = { kind: 'all' };
    else if (who.startsWith('user:') && who.length > 5) subject = { kind: 'user', name: who.slice(5) };
    else if (who.startsWith('client:') && who.length > 7) subject = { kind: 'client', id: who.slice(7) };
    else throw new AclParseError(file, line, `bad subject "${who}" (expected user:<name>, client:<id> or all)`);
    if (filter.includes('\u0000')) throw new AclParseError(file, line, 'topic filter contains NUL');
    const levels = filter.split('/');
    const problem = filterProblem(levels);
    if (problem) throw new AclParseError(file, line, `bad topic filter "${filter}": ${problem}`);
    rules.push({ effect, action, subject, filter, levels, dynamic: /%[uc]/.test(filter), line });
  });
  return rules;
}

/**
 * True when every topic matched by `requested` is matched by `rule` (MQTT filter
 * semantics; `+`/`#` in `requested` are only covered by the same or a wider
 * wildcard in `rule`). With a plain topic as `requested` this is ordinary topic
 * matching. Wildcards in the first level of `rule` do not cover `$`-topics.
 */
export function filterCovers(rule: readonly string[] | string, requested: readonly string[] | string): boolean {
  const R = typeof rule === 'string' ? rule.split('/') : rule;
  const S = typeof requested === 'string' ? requested.split('/') : requested;
  const first = S[0] ?? '';
  if ((R[0] === '#' || R[0] === '+') && first.startsWith('$')) return false;
  for (let i = 0; i < R.length; i++) {
    const r = R[i] as string;
    if (r === '#') return true; // also covers the parent level (`a/#` matches `a`)
    if (i >= S.length) return false;
    const s = S[i] as string;
    if (r === '+') {
      if (s === '#') return false;
      continue;
    }
    if (r !== s) return false; // literal level; also rejects s === '+' / '#'
  }
  return S.length === R.length;
}

function subjectMatches(s: AclSubject, who: ClientIdentity): boolean {
  switch (s.kind) {
    case 'all': return true;
    case 'user': return who.username !== undefined && who.username === s.name;
    case 'client': return who.clientId === s.id;
  }
}

const UNSAFE_VALUE = /[+#/]/;

/** Rule levels with placeholders expanded; 'missing' / 'unsafe' when that is impossible. */
function expand(rule: AclRule, who: ClientIdentity): readonly string[] | 'missing' | 'unsafe' {
  if (!rule.dynamic) return rule.levels;
  let verdict: 'missing' | 'unsafe' | null = null;
  const out = rule.levels.map((level) =>
    // Single pass, so a substituted value containing "%c" is never expanded again.
    level.replace(PLACEHOLDER_RE, (ph) => {
      const v = ph === '%u' ? who.username : who.clientId;
      if (v === undefined || v === '') verdict ??= 'missing';
      else if (UNSAFE_VALUE.test(v)) verdict = verdict === 'missing' ? 'missing' : 'unsafe';
      return v ?? '';
    }),
  );
  return verdict ?? out;
}

/** Strips a shared-subscription prefix: `$share/<group>/<filter>` → `<filter>`. */
function unshare(filter: string): string {
  const m = /^\$share\/[^/]+\/(.+)$/s.exec(filter);
  return m ? (m[1] as string) : filter;
}

const MAX_IDENTITIES = 1024;
const MAX_ENTRIES_PER_IDENTITY = 256;

export class Acl {
  private readonly cache = new Map<string, Map<string, boolean>>();

  constructor(
    readonly rules: readonly AclRule[],
    readonly defaultPolicy: AclEffect,
  ) {}

  canPublish(who: ClientIdentity, topic: string): boolean {
    return this.check(who, 'publish', topic);
  }

  /** Shared subscriptions are checked against the filter after `$share/<group>/`. */
  canSubscribe(who: ClientIdentity, filter: string): boolean {
    return this.check(who, 'subscribe', unshare(filter));
  }

  check(who: ClientIdentity, action: AclAction, topicOrFilter: string): boolean {
    const idKey = JSON.stringify([who.clientId, who.username ?? null]);
    const key = `${action[0]}${topicOrFilter}`;
    let perId = this.cache.get(idKey);
    const hit = perId?.get(key);
    if (hit !== undefined) return hit;
    const result = this.evaluate(who, action, topicOrFilter);
    if (!perId) {
      if (this.cache.size >= MAX_IDENTITIES) this.cache.clear();
      perId = new Map();
      this.cache.set(idKey, perId);
    } else if (perId.size >= MAX_ENTRIES_PER_IDENTITY) {
      perId.clear();
    }
    perId.set(key, result);
    return result;
  }

  /** The deciding rule (or null for the default policy), uncached; for tests and diagnostics. */
  decidingRule(who: ClientIdentity, action: AclAction, topicOrFilter: string): AclRule | null {
    const requested = topicOrFilter.split('/');
    for (const rule of this.rules) {
      if (rule.action !== 'all' && rule.action !== action) continue;
      if (!subjectMatches(rule.subject, who)) continue;
      const levels = expand(rule, who);
      if (levels === 'missing') continue;
      if (levels === 'unsafe') {
        if (rule.effect === 'deny') return rule; // fail closed
        continue;
      }
      if (filterCovers(levels, requested)) return rule;
    }
    return null;
  }

  private evaluate(who: ClientIdentity, action: AclAction, topicOrFilter: string): boolean {
    const rule = this.decidingRule(who, action, topicOrFilter);
    return (rule ? rule.effect : this.defaultPolicy) === 'allow';
  }
}

/** Reads and parses an ACL file; parse errors name the file and line. */
export async function loadAclFile(file: string, defaultPolicy: AclEffect): Promise<Acl> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ACL file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return new Acl(parseAcl(text, file), defaultPolicy);
}
