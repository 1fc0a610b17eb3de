// The shared route trie's memory layout: word offsets, block shapes and the two hash
// functions. Shared by the writer (writer.ts) and the readers (reader.ts); docs/trie.md
// describes every word and the memory-ordering rules.
//
// Everything lives in ONE growable SharedArrayBuffer (the heap), addressed in 32-bit words.
// A pointer is a word index into the heap; 0 is null (word 0 is the header's magic, so no
// block ever starts there).

/** 'TRIE' */
export const MAGIC = 0x54524945;
/** Bumped when any layout below changes; a reader refuses a heap of another version. */
export const LAYOUT_VERSION = 1;

// ---- Header (words 0..HEADER_WORDS-1) -----------------------------------------------------
/** MAGIC (constant). */
export const H_MAGIC = 0;
/** LAYOUT_VERSION (constant). */
export const H_LAYOUT = 1;
/** Root node pointer (constant after construction; the root is never freed). */
export const H_ROOT = 2;
/** Pointer to the current string (level) table block. Atomics: store by writer, load by readers. */
export const H_STRTAB = 3;
/** Committed heap size in words (grows; Atomics). */
export const H_HEAP_WORDS = 4;
/** Number of reader slots (constant). */
export const H_MAX_READERS = 5;
/** One past the highest reader slot ever claimed (readers raise it with compareExchange). */
export const H_READERS_HI = 6;
/** Word index of reader slot 0 (constant). */
export const H_READER_BASE = 7;
/** Generation: +1 after every change that can change a match result (own cache line). */
export const H_GEN = 16;
/** Reader slots start here, one 64-byte cache line (16 words) each. */
export const READER_BASE = 32;
export const READER_STRIDE = 16;
/** Slot word 0: 0 free, 1 claimed. */
export const R_STATE = 0;
/** Slot word 1: critical-section counter: odd while the reader is inside a match. */
export const R_COUNTER = 1;

export function headerWords(maxReaders: number): number {
  return READER_BASE + maxReaders * READER_STRIDE;
}

// ---- Node: 4 words -------------------------------------------------------------------------
/** Local worker bitmask of non-shared subscriptions to the filter ending at this node. */
export const N_MASK = 0;
/** Local worker bitmask of non-shared subscriptions to `<this node's filter>/#`. */
export const N_HMASK = 1;
/** Child node for a `+` level, or 0. */
export const N_PLUS = 2;
/**
 * Kids block (literal children + extension list), or 0; bit 30 (KIDS_EXT) is set while the
 * block's extension list is non-empty, so a walk loads K_EXT only where there is one.
 */
export const N_KIDS = 3;
/** Pointers are word indices below 2^29 (heap <= 2 GiB): bits 29..31 are free for flags. */
export const PTR_MASK = 0x1fffffff;
export const KIDS_EXT = 0x40000000;
export const NODE_WORDS = 4;

// ---- Kids block: 4 header words + 2 words per slot ----------------------------------------
/** Slot count: 0 or a power of two (constant for the block's life). */
export const K_CAP = 0;
/** Head of the extension list (route ids, shared groups), or 0. Atomics. */
export const K_EXT = 1;
/** Live entries (writer only). */
export const K_LIVE = 2;
/** Tombstones (writer only). */
export const K_TOMBS = 3;
export const K_SLOTS = 4;
/** Slot word 0: level id (string id), EMPTY (0) or TOMB (-1). Slot word 1: child node. */
export const EMPTY = 0;
export const TOMB = -1;

export function kidsWords(cap: number): number {
  return K_SLOTS + 2 * cap;
}

// ---- Extension record: 4 words ---------------------------------------------------------------
/** Next record, or 0 (Atomics: the writer unlinks by storing the predecessor's next). */
export const E_NEXT = 0;
/** (group string id << 1) | isHash; group 0 = the non-shared filter's own route id. Constant. */
export const E_KEY = 1;
/** Local worker bitmask of the group's members (unused for group 0: the node holds it). */
export const E_MASK = 2;
/** Route id set by the owner (0 = none). */
export const E_ROUTE = 3;
export const EXT_WORDS = 4;

// ---- String (level) record: 2 header words + characters --------------------------------------
/**
 * Tag word: (length << 16) | (hash tag & 0xfffe) | wide, where wide = 1 when the characters
 * are stored as UTF-16 code units (some code unit > 0xff), else one byte each (Latin-1).
 * Constant for the record's life.
 */
export const S_TAG = 0;
/** Reference count: kids-table entries and extension records naming this string (writer only). */
export const S_REFS = 1;
export const S_CHARS = 2;
export const MAX_LEVEL_UNITS = 0xffff;

export function stringWords(len: number, wide: boolean): number {
  return S_CHARS + (((wide ? len * 2 : len) + 3) >>> 2);
}

// ---- String table block: 4 header words + 1 word per slot -----------------------------------
/**
 * Slot count, a power of two (constant). A slot holds EMPTY, TOMB, or a string id with the
 * top 3 bits of the level's hash in bits 29..31 (SLOT_TAG), so a probe skips most foreign
 * entries without touching their records (a cache miss each).
 */
export const SLOT_TAG = 0xe0000000 | 0;
export const T_CAP = 0;
export const T_LIVE = 1;
export const T_TOMBS = 2;
export const T_SLOTS = 4;

export function tableWords(cap: number): number {
  return T_SLOTS + cap;
}

// ---- Hashes (identical in writer and readers) -----------------------------------------------

/** FNV-1a over UTF-16 code units of s[start, end), then a murmur3-style finaliser. */
export function hashLevel(s: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h;
}

/** The tag word a string record with this hash, length and width carries. */
export function stringTag(hash: number, len: number, wide: boolean): number {
  return ((len << 16) | ((hash >>> 16) & 0xfffe) | (wide ? 1 : 0)) | 0;
}

/** Home slot of a level id in a kids table of `mask + 1` slots. */
export function kidSlot(id: number, mask: number): number {
  let x = Math.imul(id, 0x9e3779b1);
  x ^= x >>> 16;
  return x & mask;
}
