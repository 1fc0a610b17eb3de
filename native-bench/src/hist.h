/* A compact log-linear latency histogram in the layout of HdrHistogram: values in
 * microseconds from 1 us to 60 s, 3 significant digits (2048 linear sub-buckets per
 * power of two, relative error <= 1/1024). Percentiles are reported as the highest value
 * equivalent to the bucket that holds them, as HdrHistogram (and hdr-histogram-js) do. */
#ifndef NBENCH_HIST_H
#define NBENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_HALF_MAG 10                     /* log2(sub-bucket count) - 1 */
#define HIST_SUB_COUNT (1u << (HIST_SUB_HALF_MAG + 1)) /* 2048 */
#define HIST_SUB_HALF (1u << HIST_SUB_HALF_MAG)  /* 1024 */
#define HIST_MAX_US 60000000ULL                  /* 60 s */
#define HIST_BUCKETS 16                          /* 2048 << 15 > 60e6 */
#define HIST_LEN ((HIST_BUCKETS + 1) * HIST_SUB_HALF)

typedef struct hist {
  uint64_t total;
  uint64_t min, max; /* exact, in us; min is UINT64_MAX while empty */
  uint64_t sum;      /* exact sum, for the mean */
  uint64_t counts[HIST_LEN];
} hist_t;

void hist_init(hist_t *h);
void hist_record(hist_t *h, uint64_t us);
void hist_merge(hist_t *dst, const hist_t *src);
/* p in (0, 100]; 0 when empty */
uint64_t hist_percentile(const hist_t *h, double p);
double hist_mean(const hist_t *h);
/* percentile over a plain counts array (used for per-second deltas) */
uint64_t hist_counts_percentile(const uint64_t *counts, uint64_t total, double p);

#endif
