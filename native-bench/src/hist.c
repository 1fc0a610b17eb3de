#include "hist.h"

#include <string.h>

static unsigned bucket_of(uint64_t v) {
  /* floor(log2(v | mask)) + 1 - (HIST_SUB_HALF_MAG + 1) */
  unsigned pow2ceil = 64u - (unsigned)__builtin_clzll(v | (HIST_SUB_COUNT - 1));
  return pow2ceil - (HIST_SUB_HALF_MAG + 1);
}

static uint32_t index_of(uint64_t v) {
  unsigned b = bucket_of(v);
  uint32_t sub = (uint32_t)(v >> b);
  return ((b + 1u) << HIST_SUB_HALF_MAG) + sub - HIST_SUB_HALF;
}

/* lowest value of bucket index i, and the width of its range */
static uint64_t value_of(uint32_t i, uint64_t *width) {
  int b = (int)(i >> HIST_SUB_HALF_MAG) - 1;
  uint64_t sub = (i & (HIST_SUB_HALF - 1)) + HIST_SUB_HALF;
  if (b < 0) {
    sub -= HIST_SUB_HALF;
    b = 0;
  }
  *width = 1ull << b;
  return sub << b;
}

void hist_init(hist_t *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

void hist_record(hist_t *h, uint64_t us) {
  if (us > HIST_MAX_US) us = HIST_MAX_US;
  h->counts[index_of(us)]++;
  h->total++;
  h->sum += us;
  if (us < h->min) h->min = us;
  if (us > h->max) h->max = us;
}

void hist_merge(hist_t *dst, const hist_t *src) {
  if (src->total == 0) return;
  for (uint32_t i = 0; i < HIST_LEN; i++) dst->counts[i] += src->counts[i];
  dst->total += src->total;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t hist_counts_percentile(const uint64_t *counts, uint64_t total, double p) {
  if (total == 0) return 0;
  if (p > 100.0) p = 100.0;
  uint64_t want = (uint64_t)(p / 100.0 * (double)total + 0.5);
  if (want < 1) want = 1;
  uint64_t acc = 0;
  for (uint32_t i = 0; i < HIST_LEN; i++) {
    acc += counts[i];
    if (acc >= want) {
      uint64_t w;
      uint64_t lo = value_of(i, &w);
      return lo + w - 1; /* highest equivalent value */
    }
  }
  return 0;
}

uint64_t hist_percentile(const hist_t *h, double p) {
  if (h->total == 0) return 0;
  uint64_t v = hist_counts_percentile(h->counts, h->total, p);
  /* never report beyond the exact extremes */
  if (v > h->max) v = h->max;
  if (v < h->min) v = h->min;
  return v;
}

double hist_mean(const hist_t *h) { return h->total ? (double)h->sum / (double)h->total : 0.0; }
