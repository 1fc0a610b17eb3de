/* fleetmq-nbench: shared definitions (configuration, the shared-memory control block,
 * per-worker results). See native-bench/README in docs/bench.md ("Native generator"). */
#ifndef NBENCH_H
#define NBENCH_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "hist.h"

#define NBENCH_TOOL "fleetmq-nbench"
#define MAX_HOSTS 16
#define MAX_IFADDRS 64
#define MAX_ERRS 16
#define ERR_LEN 200
#define T_UNSET INT64_MAX

enum scenario { SC_CONN, SC_SUB, SC_PUB, SC_P2P, SC_FANOUT, SC_FANIN, SC_WILDCARD };
/* controller-driven phases; warmup / measure / drain are times inside PH_RUN */
enum phase { PH_INIT, PH_CONNECT, PH_SUBSCRIBE, PH_RUN, PH_DONE };

struct endpoint {
  struct sockaddr_storage addr;
  socklen_t len;
  char name[80]; /* "host:port", for messages */
};

struct cfg {
  int scen;
  const char *scen_name;
  /* flags */
  const char *host_arg;
  int port;
  int V;
  long c;
  double i_ms;     /* -i: ms between connects */
  double R;        /* -R: connects per second (overrides -i) */
  const char *t;   /* -t, NULL when not given */
  int q;
  long s;
  double I_ms;     /* -I: ms between messages per publisher (0 = as fast as allowed) */
  uint64_t L;      /* -L: total message limit, 0 = none */
  long F;          /* -F: inflight per publisher (QoS 1/2), 0 = 65535 */
  int ts;          /* --payload-hdrs ts */
  const char *prefix;
  int shortids;
  long n;
  const char *ifaddr_arg;
  int k;           /* keepalive s */
  int clean;       /* -C */
  long x;          /* session expiry (5.0) */
  const char *user, *pass;
  double duration, warmup, drain, conn_timeout;
  long window;
  const char *json;
  int progress_json;
  long pubs, subs;
  int threads, procs; /* --workers (threads), --procs (force child processes) */
  long proc_conns;     /* --max-per-proc: connections per process above which the tool forks */
  int broker_pid;
  const char *md;      /* --md FILE */
  /* derived */
  struct endpoint hosts[MAX_HOSTS];
  int nhosts;
  struct sockaddr_storage ifaddrs[MAX_IFADDRS];
  socklen_t ifaddr_len[MAX_IFADDRS];
  char ifaddr_names[MAX_IFADDRS][48];
  int nifaddrs;
  long S, P, N;      /* subscribers, publishers, all clients */
  int pairs;         /* p2p / wildcard-scale: publisher i belongs with subscriber i */
  int combined;      /* p2p / fanout / fanin-shared / wildcard-scale */
  int W;             /* workers */
  int use_procs;     /* workers are child processes (else threads) */
  int64_t conn_interval_ns;
  int64_t I_ns;
  const char *sub_tmpl, *pub_tmpl;
  char hostname[64];
  uint64_t run_id;
  int64_t t0; /* CLOCK_MONOTONIC ns at start */
};
extern struct cfg cfg;

struct errent {
  char msg[ERR_LEN];
  uint64_t count;
};
struct errtab {
  int n;
  uint64_t other;
  struct errent e[MAX_ERRS];
};

struct counters {
  uint64_t attempted, connected, refused, failed, dropped;
  uint64_t sub_ok, sub_failed, pubs_idle;
  uint64_t sent_total, recv_total;       /* whole run */
  uint64_t sent_m, recv_m, expected_m;   /* measured window */
  uint64_t skipped_m;                    /* paced sends skipped (window / inflight full) */
  uint64_t window_released, foreign;
};

/* What one worker hands back (through memory for threads, a pipe for processes). */
struct partial {
  uint32_t magic;
  int worker;
  struct counters k;
  double cpu_user, cpu_sys; /* measured window; processes only (threads: the parent's rusage) */
  struct errtab errs;
  hist_t hist;  /* latency, measured window */
  hist_t chist; /* connect: TCP connect to CONNACK */
};
#define PARTIAL_MAGIC 0x6e62656eu

/* Per-worker live state, in shared memory, read by the controller. */
struct wslot {
  _Atomic uint64_t attempted, connected, connected_now, refused, failed, dropped;
  _Atomic uint64_t sent_total, recv_total, sent_m, recv_m, expected_m;
  _Atomic int connect_done, subscribe_done;
  _Atomic int sent_final; /* past the end of the window, with its final counts published */
  hist_t live; /* every latency sample since the run started (racy reads for progress) */
};

/* Control block shared by the controller and all workers (MAP_SHARED, before fork). */
struct shm {
  _Atomic int phase;
  _Atomic int64_t t_base;              /* connect schedule origin */
  _Atomic int64_t t_run, t_measure, t_drain; /* CLOCK_MONOTONIC ns, T_UNSET until known */
  _Atomic uint64_t limit_used;         /* -L reservations */
  _Atomic uint64_t *recv;              /* [P] deliveries seen per publisher index */
  _Atomic uint64_t *recv_ps;           /* fanout: [P][S] deliveries per publisher and subscriber
                                          (each cell written by one worker), or NULL */
  uint32_t *fan;                       /* [P] matching subscribers per message */
  _Atomic uint8_t *sub_ok;             /* [S] subscribed */
  struct wslot *slots;                 /* [W] */
};
extern struct shm *shm;

int64_t mono_ns(void);
double since_start_ms(void);
void emit_line(const char *line); /* one write() to stderr */
void emit_error(const char *msg, uint64_t count);
size_t json_escape(char *dst, size_t cap, const char *src);
uint64_t errtab_add(struct errtab *t, const char *msg); /* returns the count so far */

/* worker.c */
void worker_run(int id, struct partial *out);

#endif
