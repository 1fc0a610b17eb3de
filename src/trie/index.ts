// Shared-memory route index: filter → local worker set (+ route ids, shared groups), one
// writer thread, lock-free readers in any thread. See docs/trie.md.
export { TrieWriter, type TrieBuffers, type TrieOptions, type TrieWriterStats } from './writer.js';
export { TrieReader, type TrieGroupMatch, type TrieMatch, type TrieReaderOptions, type TrieReaderStats } from './reader.js';
export { isGrowable } from './heap.js';
