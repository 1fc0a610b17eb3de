// Topic names, topic filters, shared subscriptions and matching (MQTT 4.7 / 4.8.2).
// Lengths are in UTF-8 bytes; a limit <= 0 means "no limit" (beyond the protocol's
// 65,535-byte string maximum).

const SLASH = 0x2f;
const PLUS = 0x2b;
const HASH = 0x23;
const DOLLAR = 0x24;
const MAX_STRING_BYTES = 65_535;

function byteLengthOver(s: string, max: number): boolean {
  // A UTF-16 code unit encodes to 1..3 bytes (a surrogate pair, 2 units, to 4).
  if (s.length > max) return true;
  if (s.length * 3 <= max) return false;
  return Buffer.byteLength(s, 'utf8') > max;
}

function checkLimits(s: string, levels: number, maxLevels: number, maxLength: number, what: string): string | null {
  const lim = maxLength > 0 && maxLength < MAX_STRING_BYTES ? maxLength : MAX_STRING_BYTES;
  if (byteLengthOver(s, lim)) return `${what} longer than ${lim} bytes`;
  if (maxLevels > 0 && levels > maxLevels) return `${what} has ${levels} levels, more than ${maxLevels}`;
  return null;
}

/**
 * A topic name a client may publish to: non-empty [MQTT-4.7.3-1], no wildcards
 * [MQTT-3.3.2-2], no U+0000 [MQTT-1.5.4-2], within the level and byte limits.
 * Returns an error message or null.
 */
export function validateTopicName(topic: string, maxLevels: number, maxLength: number): string | null {
  const n = topic.length;
  if (n === 0) return 'topic name is empty [MQTT-4.7.3-1]';
  let levels = 1;
  for (let i = 0; i < n; i++) {
    const c = topic.charCodeAt(i);
    if (c === SLASH) levels++;
    else if (c === PLUS || c === HASH) return 'topic name contains a wildcard [MQTT-3.3.2-2]';
    else if (c === 0) return 'topic name contains U+0000 [MQTT-1.5.4-2]';
  }
  return checkLimits(topic, levels, maxLevels, maxLength, 'topic name');
}

/**
 * A topic filter (the part after any $share/<group>/ prefix): non-empty
 * [MQTT-4.7.3-1], '#' alone in the last level [MQTT-4.7.1-2], '+' alone in its level
 * [MQTT-4.7.1-3], no U+0000, within the level and byte limits. Returns an error or null.
 */
export function validateTopicFilter(filter: string, maxLevels: number, maxLength: number): string | null {
  const n = filter.length;
  if (n === 0) return 'topic filter is empty [MQTT-4.7.3-1]';
  let levels = 1;
  for (let i = 0; i < n; i++) {
    const c = filter.charCodeAt(i);
    if (c === SLASH) {
      levels++;
    } else if (c === PLUS) {
      if ((i > 0 && filter.charCodeAt(i - 1) !== SLASH) || (i + 1 < n && filter.charCodeAt(i + 1) !== SLASH)) {
        return "'+' must occupy a whole level [MQTT-4.7.1-3]";
      }
    } else if (c === HASH) {
      if (i + 1 !== n) return "'#' must be the last character [MQTT-4.7.1-2]";
      if (i > 0 && filter.charCodeAt(i - 1) !== SLASH) return "'#' must occupy a whole level [MQTT-4.7.1-2]";
    } else if (c === 0) {
      return 'topic filter contains U+0000 [MQTT-1.5.4-2]';
    }
  }
  return checkLimits(filter, levels, maxLevels, maxLength, 'topic filter');
}

export type ShareParse = { group: string | null; filter: string } | { error: string };

const SHARE_PREFIX = '$share/';
const QUEUE_PREFIX = '$queue/';

/**
 * Splits a subscription filter: `$share/<group>/<filter>` → { group, filter };
 * `$queue/<filter>` → { group: '$queue', filter }; anything else → { group: null,
 * filter } unchanged. The group must be non-empty without '+', '#' or '/'
 * [MQTT-4.8.2-1/2]; the inner filter must be a valid topic filter (no size limits
 * applied here — validate result.filter with validateTopicFilter for those).
 */
export function parseShare(filter: string): ShareParse {
  let group: string;
  let inner: string;
  if (filter.startsWith(SHARE_PREFIX)) {
    const slash = filter.indexOf('/', SHARE_PREFIX.length);
    if (slash < 0) return { error: 'shared subscription needs $share/<group>/<filter>' };
    group = filter.slice(SHARE_PREFIX.length, slash);
    if (group.length === 0) return { error: 'shared subscription group is empty [MQTT-4.8.2-1]' };
    for (let i = 0; i < group.length; i++) {
      const c = group.charCodeAt(i);
      if (c === PLUS || c === HASH) return { error: "shared subscription group contains '+' or '#' [MQTT-4.8.2-2]" };
      if (c === 0) return { error: 'shared subscription group contains U+0000' };
    }
    inner = filter.slice(slash + 1);
  } else if (filter.startsWith(QUEUE_PREFIX)) {
    group = '$queue';
    inner = filter.slice(QUEUE_PREFIX.length);
  } else {
    return { group: null, filter };
  }
  if (inner.length === 0) return { error: 'shared subscription topic filter is empty [MQTT-4.8.2-1]' };
  const err = validateTopicFilter(inner, 0, 0);
  if (err !== null) return { error: `shared subscription: ${err}` };
  return { group, filter: inner };
}

/** True if the filter contains '+' or '#'. */
export function isWildcard(filter: string): boolean {
  return filter.indexOf('+') >= 0 || filter.indexOf('#') >= 0;
}

/**
 * Does a (valid, non-shared) topic filter match a topic name? '+' matches one level
 * (possibly empty), '#' the parent level and any number of child levels; topics
 * starting with '$' are not matched by filters starting with '+' or '#' [MQTT-4.7.2-1].
 */
export function topicMatches(filter: string, topic: string): boolean {
  const fl = filter.length;
  const tl = topic.length;
  if (fl === 0) return false;
  const f0 = filter.charCodeAt(0);
  if ((f0 === PLUS || f0 === HASH) && tl > 0 && topic.charCodeAt(0) === DOLLAR) return false;
  let fi = 0;
  let ti = 0;
  for (;;) {
    // Both indices are at the start of a level.
    const fc = fi < fl ? filter.charCodeAt(fi) : -1;
    if (fc === HASH) return true;
    if (fc === PLUS) {
      while (ti < tl && topic.charCodeAt(ti) !== SLASH) ti++;
      fi++;
    } else {
      for (;;) {
        const fEnd = fi >= fl || filter.charCodeAt(fi) === SLASH;
        const tEnd = ti >= tl || topic.charCodeAt(ti) === SLASH;
        if (fEnd || tEnd) {
          if (fEnd !== tEnd) return false;
          break;
        }
        if (filter.charCodeAt(fi) !== topic.charCodeAt(ti)) return false;
        fi++;
        ti++;
      }
    }
    // Both at the end of a level: end of string or a '/'.
    if (fi >= fl) return ti >= tl;
    fi++; // past '/' in the filter
    if (ti >= tl) {
      // Topic ended: only a trailing "/#" still matches (it covers the parent level).
      return fi + 1 === fl && filter.charCodeAt(fi) === HASH;
    }
    ti++; // past '/' in the topic
  }
}
