/* fleetmq-nbench: command line, the controller (phases, progress, deadlines) and the
 * result. The load itself runs in worker.c, on threads or (above ~19k connections, one
 * process may hold at most 20,000 open files) in child processes. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nbench.h"

struct cfg cfg;
struct shm *shm;

#define MAX_WORKERS 64

static volatile sig_atomic_t sig_count;
static int aborted; /* stopped by a signal */
static pid_t children[MAX_WORKERS];
static int nchildren;

/* ------------------------------------------------------------------ small utilities */

int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double since_start_ms(void) { return (double)(mono_ns() - cfg.t0) / 1e6; }

void emit_line(const char *line) {
  size_t n = strlen(line);
  while (n > 0) {
    ssize_t w = write(2, line, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    line += w;
    n -= (size_t)w;
  }
}

size_t json_escape(char *dst, size_t cap, const char *src) {
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)src; *p && o + 7 < cap; p++) {
    if (*p == '"' || *p == '\\') {
      dst[o++] = '\\';
      dst[o++] = (char)*p;
    } else if (*p < 0x20) {
      o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", *p);
    } else {
      dst[o++] = (char)*p;
    }
  }
  dst[o] = 0;
  return o;
}

void emit_error(const char *msg, uint64_t count) {
  char esc[ERR_LEN * 6 + 1], line[ERR_LEN * 6 + 160];
  if (cfg.progress_json) {
    json_escape(esc, sizeof esc, msg);
    snprintf(line, sizeof line, "{\"event\":\"error\",\"message\":\"%s\",\"count\":%llu,\"t\":%.0f}\n", esc,
             (unsigned long long)count, since_start_ms());
  } else if (count > 1) {
    snprintf(line, sizeof line, "[%7.1fs] error: %s (x%llu)\n", since_start_ms() / 1000.0, msg,
             (unsigned long long)count);
  } else {
    snprintf(line, sizeof line, "[%7.1fs] error: %s\n", since_start_ms() / 1000.0, msg);
  }
  emit_line(line);
}

uint64_t errtab_add(struct errtab *t, const char *msg) {
  for (int i = 0; i < t->n; i++) {
    if (strcmp(t->e[i].msg, msg) == 0) return ++t->e[i].count;
  }
  if (t->n < MAX_ERRS) {
    snprintf(t->e[t->n].msg, ERR_LEN, "%s", msg);
    t->e[t->n].count = 1;
    t->n++;
    return 1;
  }
  return ++t->other;
}

static void errtab_merge(struct errtab *dst, const struct errtab *src) {
  for (int i = 0; i < src->n; i++) {
    int found = 0;
    for (int j = 0; j < dst->n; j++) {
      if (strcmp(dst->e[j].msg, src->e[i].msg) == 0) {
        dst->e[j].count += src->e[i].count;
        found = 1;
        break;
      }
    }
    if (found) continue;
    if (dst->n < MAX_ERRS) dst->e[dst->n++] = src->e[i];
    else dst->other += src->e[i].count;
  }
  dst->other += src->other;
}

static struct errtab ctl_errs;

static void ctl_error(const char *fmt, ...) {
  char msg[ERR_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  emit_error(msg, errtab_add(&ctl_errs, msg));
}

static void usage_exit(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n(run `%s --help` for the flags)\n", NBENCH_TOOL, msg, NBENCH_TOOL);
  exit(2);
}

static void usage(void) {
  printf(
      "fleetmq-nbench - MQTT load generator in C (epoll, plain TCP, MQTT 3.1 / 3.1.1 / 5.0)\n"
      "Same commands, flags, progress events and result as fleetmq-bench (docs/bench-format.md).\n"
      "\n"
      "Usage: fleetmq-nbench <command> [flags]\n"
      "\n"
      "Commands (emqtt-bench):\n"
      "  conn            open -c connections and hold them for --duration (RSS per connection with --broker-pid)\n"
      "  sub             -c subscribers on -t\n"
      "  pub             -c publishers on -t\n"
      "Scenarios:\n"
      "  p2p             -c pairs: publisher i -> bench/i -> subscriber i\n"
      "  fanout          --pubs P publishers on bench/i -> --subs S subscribers on bench/#\n"
      "  fanin-shared    --pubs P publishers on bench/i -> --subs S subscribers on $share/g/bench/#\n"
      "  wildcard-scale  -c subscribers on bench/i/# + -c publishers on bench/i/test\n"
      "\n"
      "Flags:\n"
      "  -h, --host STR              broker host(s), comma-separated, used round-robin (127.0.0.1)\n"
      "  -p, --port N                broker port (1883)\n"
      "  -V, --version N             MQTT protocol version 3 | 4 | 5 (5)\n"
      "  -c, --count N               clients (conn/pub/sub), pairs (p2p), publishers+subscribers each\n"
      "                              (wildcard-scale) (200)\n"
      "  -n, --startnumber N         client sequence numbers are n+1 .. n+c (0)\n"
      "  -i, --interval N            ms between connects, all workers together (10)\n"
      "  -R, --connrate N            connects per second; overrides -i when > 0 (0)\n"
      "  -t, --topic STR             topic template for pub/sub: %%i = sequence number, %%c = client id\n"
      "  -q, --qos N                 QoS of publishes and subscriptions 0 | 1 | 2 (0)\n"
      "  -s, --size N                payload bytes (256; at least 12 with timestamps)\n"
      "  -I, --interval_of_msg N     ms between messages per publisher; 0 = as fast as the window allows (1000)\n"
      "  -L, --limit N               total messages for all publishers, warm-up included; 0 = no limit (0)\n"
      "  -F, --inflight N            QoS 1/2 messages in flight per publisher; 0 = no limit (1)\n"
      "  --payload-hdrs ts           8-byte send time + 4-byte publisher index at the payload start\n"
      "                              (always on in scenarios)\n"
      "  --prefix STR, --shortids    client id prefix; short ids <prefix><n> (scenarios: <prefix>p<n> / s<n>)\n"
      "  --ifaddr STR                source address(es), comma-separated, used round-robin\n"
      "  -k, --keepalive N           keep alive seconds (300)\n"
      "  -C, --clean [true|false]    clean start (true)\n"
      "  -x, --session-expiry N      session expiry interval seconds, MQTT 5 only (0)\n"
      "  -u, --username STR, -P, --password STR\n"
      "  --duration N                measured window, seconds (10)\n"
      "  --warmup N                  warm-up before the measured window, seconds (1)\n"
      "  --window N                  end-to-end window per publisher: messages sent but not yet\n"
      "                              received; 0 = off (100 in scenarios, 0 otherwise)\n"
      "  --drain N                   longest wait for in-flight messages after the window, seconds (2)\n"
      "  --pubs N, --subs N          publishers / subscribers of fanout (1/100), fanin-shared (100/10)\n"
      "  --workers N                 epoll threads (1); alias --threads\n"
      "  --procs N                   run the workers as N child processes (automatic above --max-per-proc)\n"
      "  --max-per-proc N            connections per process before splitting over processes (19000)\n"
      "  --broker-pid N              broker process on this machine: report its RSS (conn: per connection)\n"
      "  --connect-timeout N         seconds for TCP + CONNACK (and SUBACK) before it counts as failed (10)\n"
      "  --json FILE, --md FILE      write the result object / its Markdown table to FILE\n"
      "  --progress text|json        progress on stderr (text)\n"
      "  --help                      this text\n"
      "Not supported here: --ws, -S (use fleetmq-bench).\n"
      "\n"
      "Result: one JSON object (last line of stdout, and --json FILE); progress on stderr.\n"
      "Exit: 0 run completed, 1 no connection / aborted / a worker lost, 2 bad command line.\n");
  exit(0);
}

/* ------------------------------------------------------------------ arguments */

static double num_arg(const char *flag, const char *v, double lo, double hi) {
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(d) || d < lo || d > hi)
    usage_exit("%s: expected a number %g..%g, got '%s'", flag, lo, hi, v);
  return d;
}

static long int_arg(const char *flag, const char *v, double lo, double hi) {
  const char *p = v;
  if (*p == '-') p++;
  if (!*p || strspn(p, "0123456789") != strlen(p)) usage_exit("%s: expected an integer %.0f..%.0f, got '%s'", flag, lo, hi, v);
  return (long)num_arg(flag, v, lo, hi);
}

static int bool_arg(const char *flag, const char *v) {
  if (!strcmp(v, "true")) return 1;
  if (!strcmp(v, "false")) return 0;
  usage_exit("%s: expected true or false, got '%s'", flag, v);
  return 0;
}

static int c_set, pubs_set, subs_set, window_set;

static void parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help")) usage();
  if (argc < 2) usage_exit("no command given (conn, sub, pub, p2p, fanout, fanin-shared, wildcard-scale)");
  if (!strcmp(argv[1], "help")) usage();
  static const char *names[] = {"conn", "sub", "pub", "p2p", "fanout", "fanin-shared", "wildcard-scale"};
  cfg.scen = -1;
  for (int i = 0; i < 7; i++)
    if (!strcmp(argv[1], names[i])) cfg.scen = i;
  if (cfg.scen < 0) usage_exit("unknown command '%s' (conn, sub, pub, p2p, fanout, fanin-shared, wildcard-scale)", argv[1]);
  cfg.scen_name = names[cfg.scen];

  cfg.host_arg = "127.0.0.1";
  cfg.port = 1883;
  cfg.V = 5;
  cfg.c = 200;
  cfg.i_ms = 10;
  cfg.s = 256;
  cfg.I_ms = 1000;
  cfg.F = 1;
  cfg.k = 300;
  cfg.clean = 1;
  cfg.duration = 10;
  cfg.warmup = 1;
  cfg.drain = 2;
  cfg.conn_timeout = 10;
  cfg.threads = 1;
  cfg.proc_conns = 19000;

  for (int i = 2; i < argc; i++) {
    char *a = argv[i], *v = NULL;
    char name[64];
    if (a[0] != '-' || !a[1]) usage_exit("unexpected argument '%s'", a);
    snprintf(name, sizeof name, "%s", a);
    char *eq = strncmp(a, "--", 2) == 0 ? strchr(name, '=') : NULL;
    if (eq) {
      *eq = 0;
      v = a + (eq - name) + 1;
    }
    const char *f = name;
    /* booleans: the value is optional */
    int is_ws = !strcmp(f, "--ws"), is_tls = !strcmp(f, "-S") || !strcmp(f, "--ssl");
    int is_short = !strcmp(f, "--shortids"), is_clean = !strcmp(f, "-C") || !strcmp(f, "--clean");
    if (is_ws || is_tls || is_short || is_clean) {
      if (!v && i + 1 < argc && (!strcmp(argv[i + 1], "true") || !strcmp(argv[i + 1], "false"))) v = argv[++i];
      int on = v ? bool_arg(f, v) : 1;
      if (is_ws && on)
        usage_exit("--ws (MQTT over WebSocket) is not supported by fleetmq-nbench (plain TCP only): use fleetmq-bench");
      if (is_tls && on) usage_exit("-S (TLS) is not supported by fleetmq-nbench (plain TCP only): use fleetmq-bench");
      if (is_short) cfg.shortids = on;
      if (is_clean) cfg.clean = on;
      continue;
    }
    if (!v) {
      if (i + 1 >= argc) usage_exit("%s: missing value", f);
      v = argv[++i];
    }
    if (!strcmp(f, "-h") || !strcmp(f, "--host")) cfg.host_arg = v;
    else if (!strcmp(f, "-p") || !strcmp(f, "--port")) cfg.port = (int)int_arg(f, v, 1, 65535);
    else if (!strcmp(f, "-V") || !strcmp(f, "--version")) cfg.V = (int)int_arg(f, v, 3, 5);
    else if (!strcmp(f, "-c") || !strcmp(f, "--count")) {
      cfg.c = int_arg(f, v, 1, 10000000);
      c_set = 1;
    } else if (!strcmp(f, "-n") || !strcmp(f, "--startnumber")) cfg.n = int_arg(f, v, 0, 4000000000.0);
    else if (!strcmp(f, "-i") || !strcmp(f, "--interval")) cfg.i_ms = num_arg(f, v, 0, 3600000);
    else if (!strcmp(f, "-R") || !strcmp(f, "--connrate")) cfg.R = num_arg(f, v, 0, 10000000);
    else if (!strcmp(f, "-t") || !strcmp(f, "--topic")) cfg.t = v;
    else if (!strcmp(f, "-q") || !strcmp(f, "--qos")) cfg.q = (int)int_arg(f, v, 0, 2);
    else if (!strcmp(f, "-s") || !strcmp(f, "--size")) cfg.s = int_arg(f, v, 0, 16 * 1024 * 1024);
    else if (!strcmp(f, "-I") || !strcmp(f, "--interval_of_msg")) cfg.I_ms = num_arg(f, v, 0, 3600000);
    else if (!strcmp(f, "-L") || !strcmp(f, "--limit")) cfg.L = (uint64_t)int_arg(f, v, 0, 2147483647.0);
    else if (!strcmp(f, "-F") || !strcmp(f, "--inflight")) cfg.F = int_arg(f, v, 0, 65535);
    else if (!strcmp(f, "--payload-hdrs")) {
      if (strcmp(v, "ts") != 0 && v[0]) usage_exit("--payload-hdrs: only \"ts\" is supported, got '%s'", v);
      cfg.ts = v[0] != 0;
    } else if (!strcmp(f, "--prefix")) cfg.prefix = v;
    else if (!strcmp(f, "--ifaddr")) cfg.ifaddr_arg = v;
    else if (!strcmp(f, "-k") || !strcmp(f, "--keepalive")) cfg.k = (int)int_arg(f, v, 0, 65535);
    else if (!strcmp(f, "-x") || !strcmp(f, "--session-expiry")) cfg.x = int_arg(f, v, 0, 4294967295.0);
    else if (!strcmp(f, "-u") || !strcmp(f, "--username")) cfg.user = v;
    else if (!strcmp(f, "-P") || !strcmp(f, "--password")) cfg.pass = v;
    else if (!strcmp(f, "--ws-path")) { /* only meaningful with --ws, which is refused */
    } else if (!strcmp(f, "--duration")) cfg.duration = num_arg(f, v, 0.001, 86400);
    else if (!strcmp(f, "--warmup")) cfg.warmup = num_arg(f, v, 0, 3600);
    else if (!strcmp(f, "--drain")) cfg.drain = num_arg(f, v, 0, 600);
    else if (!strcmp(f, "--connect-timeout") || !strcmp(f, "--conn-timeout")) cfg.conn_timeout = num_arg(f, v, 0.001, 3600);
    else if (!strcmp(f, "--window")) {
      cfg.window = int_arg(f, v, 0, 1000000);
      window_set = 1;
    } else if (!strcmp(f, "--json")) cfg.json = v;
    else if (!strcmp(f, "--md")) cfg.md = v;
    else if (!strcmp(f, "--progress")) {
      if (!strcmp(v, "json")) cfg.progress_json = 1;
      else if (!strcmp(v, "text")) cfg.progress_json = 0;
      else usage_exit("--progress: expected json or text, got '%s'", v);
    } else if (!strcmp(f, "--pubs")) {
      cfg.pubs = int_arg(f, v, 1, 10000000);
      pubs_set = 1;
    } else if (!strcmp(f, "--subs")) {
      cfg.subs = int_arg(f, v, 1, 10000000);
      subs_set = 1;
    } else if (!strcmp(f, "--workers") || !strcmp(f, "--threads")) cfg.threads = (int)int_arg(f, v, 1, MAX_WORKERS);
    else if (!strcmp(f, "--procs")) cfg.procs = (int)int_arg(f, v, 1, MAX_WORKERS);
    else if (!strcmp(f, "--max-per-proc") || !strcmp(f, "--proc-conns")) cfg.proc_conns = int_arg(f, v, 2, 1000000);
    else if (!strcmp(f, "--broker-pid")) cfg.broker_pid = (int)int_arg(f, v, 1, 2147483647.0);
    else usage_exit("unknown flag %s", f);
  }
  if (cfg.json && !cfg.json[0]) usage_exit("--json: missing file name");
  if (cfg.md && !cfg.md[0]) usage_exit("--md: missing file name");
}

static char *dup_or_die(const char *s) {
  char *d = strdup(s);
  if (!d) exit(3);
  return d;
}

static void resolve(void) {
  char *list = dup_or_die(cfg.host_arg), *save = NULL;
  for (char *h = strtok_r(list, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
    if (cfg.nhosts >= MAX_HOSTS) usage_exit("-h: at most %d hosts", MAX_HOSTS);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg.port);
    int r = getaddrinfo(h, port, &hints, &res);
    if (r != 0 || !res) usage_exit("-h: cannot resolve '%s': %s", h, gai_strerror(r));
    struct endpoint *ep = &cfg.hosts[cfg.nhosts++];
    memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
    ep->len = res->ai_addrlen;
    snprintf(ep->name, sizeof ep->name, "%s:%d", h, cfg.port);
    freeaddrinfo(res);
  }
  if (!cfg.nhosts) usage_exit("-h: expected host[,host...], got '%s'", cfg.host_arg);
  free(list);
  if (cfg.ifaddr_arg) {
    list = dup_or_die(cfg.ifaddr_arg);
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
      if (cfg.nifaddrs >= MAX_IFADDRS) usage_exit("--ifaddr: at most %d addresses", MAX_IFADDRS);
      int i = cfg.nifaddrs++;
      struct sockaddr_in *s4 = (struct sockaddr_in *)&cfg.ifaddrs[i];
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&cfg.ifaddrs[i];
      if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        cfg.ifaddr_len[i] = sizeof *s4;
      } else if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        cfg.ifaddr_len[i] = sizeof *s6;
      } else {
        usage_exit("--ifaddr: expected IP address[,address...], got '%s'", cfg.ifaddr_arg);
      }
      snprintf(cfg.ifaddr_names[i], sizeof cfg.ifaddr_names[i], "%s", a);
    }
    free(list);
  }
}

static long per_worker_max(int W) {
  if (cfg.pairs) return 2 * ((cfg.S + W - 1) / W);
  return (cfg.N + W - 1) / W;
}

static void derive(void) {
  int sc = cfg.scen;
  if (sc == SC_PUB || sc == SC_SUB) {
    if (!cfg.t) usage_exit("-t: required for %s (topic template, e.g. bench/%%i)", cfg.scen_name);
    if (!cfg.t[0]) usage_exit("-t: empty topic");
    if (sc == SC_PUB && strpbrk(cfg.t, "+#")) usage_exit("-t: a publish topic may not contain + or #, got '%s'", cfg.t);
  } else if (cfg.t) {
    usage_exit("-t: not used by %s (its topics are fixed, see --help)", cfg.scen_name);
  }
  if (sc == SC_FANOUT || sc == SC_FANIN) {
    if (c_set) usage_exit("-c: not used by %s; give --pubs P --subs S", cfg.scen_name);
  } else {
    if (pubs_set) usage_exit("--pubs: only for fanout and fanin-shared (%s uses -c)", cfg.scen_name);
    if (subs_set) usage_exit("--subs: only for fanout and fanin-shared (%s uses -c)", cfg.scen_name);
  }
  if (window_set && cfg.window > 0 && (sc == SC_PUB || sc == SC_SUB || sc == SC_CONN))
    usage_exit("--window: needs a scenario where this tool both publishes and receives (p2p, fanout, "
               "fanin-shared, wildcard-scale), not %s", cfg.scen_name);
  if (cfg.broker_pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", cfg.broker_pid);
    if (access(path, R_OK) != 0)
      usage_exit("--broker-pid: no process %d on this machine (%s)", cfg.broker_pid, path);
  }
  switch (sc) {
    case SC_CONN:
      cfg.N = cfg.c;
      break;
    case SC_SUB:
      cfg.S = cfg.N = cfg.c;
      cfg.sub_tmpl = cfg.t;
      break;
    case SC_PUB:
      cfg.P = cfg.N = cfg.c;
      cfg.pub_tmpl = cfg.t;
      break;
    case SC_P2P:
    case SC_WILDCARD:
      cfg.S = cfg.P = cfg.c;
      cfg.N = 2 * cfg.c;
      cfg.pairs = cfg.combined = 1;
      cfg.sub_tmpl = sc == SC_P2P ? "bench/%i" : "bench/%i/#";
      cfg.pub_tmpl = sc == SC_P2P ? "bench/%i" : "bench/%i/test";
      break;
    case SC_FANOUT:
    case SC_FANIN:
      cfg.P = pubs_set ? cfg.pubs : sc == SC_FANOUT ? 1 : 100;
      cfg.S = subs_set ? cfg.subs : sc == SC_FANOUT ? 100 : 10;
      cfg.N = cfg.S + cfg.P;
      cfg.combined = 1;
      cfg.sub_tmpl = sc == SC_FANOUT ? "bench/#" : "$share/g/bench/#";
      cfg.pub_tmpl = "bench/%i";
      break;
  }
  cfg.pubs = cfg.P;
  cfg.subs = cfg.S;
  if (cfg.combined) {
    cfg.ts = 1;
    if (!window_set) cfg.window = 100;
  }
  if (cfg.ts && cfg.s < 12)
    usage_exit("-s: must be at least 12 with timestamps (8-byte time + 4-byte publisher index), got %ld", cfg.s);
  long most = cfg.c > cfg.P ? cfg.c : cfg.P;
  if (cfg.S > most) most = cfg.S;
  if ((double)cfg.n + (double)most > 4294967295.0)
    usage_exit("-n: sequence numbers must stay below 2^32 (the payload carries them as u32), got -n %ld", cfg.n);
  if (cfg.N > 2000000) usage_exit("too many clients (%ld)", cfg.N);
  cfg.conn_interval_ns = cfg.R > 0 ? (int64_t)(1e9 / cfg.R) : (int64_t)(cfg.i_ms * 1e6);
  cfg.I_ns = (int64_t)(cfg.I_ms * 1e6);

  int need = (int)((cfg.N + cfg.proc_conns - 1) / cfg.proc_conns);
  if (need < 1) need = 1;
  if (need > 1 || cfg.procs > 1) {
    cfg.use_procs = 1;
    cfg.W = need > cfg.procs ? need : cfg.procs;
    while (per_worker_max(cfg.W) > cfg.proc_conns) cfg.W++;
    if (cfg.W > MAX_WORKERS) usage_exit("%ld connections need more than %d processes", cfg.N, MAX_WORKERS);
  } else {
    cfg.W = cfg.threads;
  }
  if (gethostname(cfg.hostname, sizeof cfg.hostname - 1) != 0) strcpy(cfg.hostname, "nbench");
  cfg.run_id = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
}

/* ------------------------------------------------------------------ shared memory */

static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }

static void setup_shm(void) {
  size_t o_hdr = 0, o_recv = al64(sizeof(struct shm));
  size_t o_fan = o_recv + al64((size_t)cfg.P * sizeof(uint64_t) + 8);
  size_t o_sub = o_fan + al64((size_t)cfg.P * sizeof(uint32_t) + 4);
  size_t o_slots = o_sub + al64((size_t)cfg.S + 1);
  size_t o_ps = o_slots + al64((size_t)cfg.W * sizeof(struct wslot));
  /* fanout: a message counts as received for the window once every subscriber has it */
  size_t nps = cfg.scen == SC_FANOUT && (double)cfg.P * (double)cfg.S <= 16e6 ? (size_t)cfg.P * (size_t)cfg.S : 0;
  size_t total = o_ps + nps * sizeof(uint64_t);
  uint8_t *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    perror("mmap");
    exit(3);
  }
  shm = (struct shm *)(m + o_hdr);
  atomic_init(&shm->phase, PH_INIT);
  atomic_init(&shm->t_base, T_UNSET);
  atomic_init(&shm->t_run, T_UNSET);
  atomic_init(&shm->t_measure, T_UNSET);
  atomic_init(&shm->t_drain, T_UNSET);
  atomic_init(&shm->limit_used, 0);
  shm->recv = (_Atomic uint64_t *)(m + o_recv);
  shm->fan = (uint32_t *)(m + o_fan);
  shm->sub_ok = (_Atomic uint8_t *)(m + o_sub);
  shm->slots = (struct wslot *)(m + o_slots);
  shm->recv_ps = nps ? (_Atomic uint64_t *)(m + o_ps) : NULL;
  for (int i = 0; i < cfg.W; i++) hist_init(&shm->slots[i].live);
}

/* ------------------------------------------------------------------ workers */

static struct partial *parts; /* [W] */
static pthread_t threads[MAX_WORKERS];
static int pipes[MAX_WORKERS];

static void *thread_main(void *arg) {
  int id = (int)(intptr_t)arg;
  worker_run(id, &parts[id]);
  return NULL;
}

static void start_workers(void) {
  parts = calloc((size_t)cfg.W, sizeof(struct partial));
  if (!parts) exit(3);
  fflush(stdout);
  fflush(stderr);
  for (int i = 0; i < cfg.W; i++) {
    if (!cfg.use_procs) {
      if (pthread_create(&threads[i], NULL, thread_main, (void *)(intptr_t)i) != 0) {
        perror("pthread_create");
        exit(3);
      }
      continue;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
      perror("pipe");
      exit(3);
    }
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      exit(3);
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      signal(SIGINT, SIG_IGN);
      signal(SIGTERM, SIG_IGN);
      signal(SIGALRM, SIG_DFL);
      alarm(0);
      close(fds[0]);
      for (int j = 0; j < i; j++) close(pipes[j]);
      if (getppid() == 1) _exit(3);
      struct partial *p = calloc(1, sizeof *p);
      if (!p) _exit(3);
      worker_run(i, p);
      const uint8_t *b = (const uint8_t *)p;
      size_t left = sizeof *p;
      while (left) {
        ssize_t w = write(fds[1], b, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(3);
        b += w;
        left -= (size_t)w;
      }
      _exit(0);
    }
    close(fds[1]);
    pipes[i] = fds[0];
    children[nchildren++] = pid;
  }
}

static int got_part[MAX_WORKERS];
static int child_exited[MAX_WORKERS];

/* reads every child's partial result (bounded in time) */
static void collect(void) {
  if (!cfg.use_procs) {
    for (int i = 0; i < cfg.W; i++) {
      struct timespec dl;
      clock_gettime(CLOCK_REALTIME, &dl);
      dl.tv_sec += 15;
      if (pthread_timedjoin_np(threads[i], NULL, &dl) == 0 && parts[i].magic == PARTIAL_MAGIC)
        got_part[i] = 1;
      else
        ctl_error("worker %d did not finish", i);
    }
    return;
  }
  int64_t deadline = mono_ns() + 15 * 1000000000LL;
  for (int i = 0; i < cfg.W; i++) {
    uint8_t *b = (uint8_t *)&parts[i];
    size_t got = 0;
    while (got < sizeof(struct partial)) {
      int64_t left = (deadline - mono_ns()) / 1000000;
      if (left <= 0) break;
      struct pollfd pf = {.fd = pipes[i], .events = POLLIN};
      int r = poll(&pf, 1, (int)left);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      ssize_t n = read(pipes[i], b + got, sizeof(struct partial) - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
    }
    close(pipes[i]);
    if (got == sizeof(struct partial) && parts[i].magic == PARTIAL_MAGIC) got_part[i] = 1;
    else ctl_error("worker process %d: no result (crashed or stuck)", i);
  }
  for (int i = 0; i < nchildren; i++) {
    int st;
    int64_t dl = mono_ns() + 5 * 1000000000LL;
    while (!child_exited[i]) {
      pid_t r = waitpid(children[i], &st, WNOHANG);
      if (r == children[i] || (r < 0 && errno != EINTR)) {
        child_exited[i] = 1;
        break;
      }
      if (mono_ns() > dl) {
        kill(children[i], SIGKILL);
        waitpid(children[i], &st, 0);
        child_exited[i] = 1;
        break;
      }
      struct timespec ts = {0, 10000000};
      nanosleep(&ts, NULL);
    }
  }
}

/* notices a child that died before the end (its share is then counted as done) */
static void reap_early(void) {
  for (int i = 0; i < nchildren; i++) {
    if (child_exited[i]) continue;
    int st;
    if (waitpid(children[i], &st, WNOHANG) == children[i]) {
      child_exited[i] = 1;
      if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        ctl_error("worker process %d died (%s %d)", i, WIFSIGNALED(st) ? "signal" : "exit status",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      atomic_store(&shm->slots[i].connect_done, 1);
      atomic_store(&shm->slots[i].subscribe_done, 1);
      atomic_store(&shm->slots[i].sent_final, 1);
    }
  }
}

/* ------------------------------------------------------------------ controller */

static const char *phase_names[] = {"connect", "subscribe", "warmup", "measure", "drain", "done"};
static int phase_emitted = -1;

static void emit_phase(int idx) {
  char line[160];
  if (cfg.progress_json)
    snprintf(line, sizeof line, "{\"event\":\"phase\",\"phase\":\"%s\",\"t\":%.0f}\n", phase_names[idx],
             since_start_ms());
  else
    snprintf(line, sizeof line, "[%7.1fs] phase %s\n", since_start_ms() / 1000.0, phase_names[idx]);
  emit_line(line);
  phase_emitted = idx;
}

static struct rusage ru_m, ru_d;
static int ru_m_done, ru_d_done;
static long rss_before = -1, rss_after = -1;
static long connected_at_drain;
static long read_rss(int pid);
#define RSS_SAMPLES 4096
static long rss_samples[RSS_SAMPLES];
static int nrss;
static int64_t next_rss = T_UNSET;

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

static void sample_rss(void) {
  long v = read_rss(cfg.broker_pid);
  if (v >= 0 && nrss < RSS_SAMPLES) rss_samples[nrss++] = v;
}

static long read_rss(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

static uint64_t sum_slot(size_t off) {
  uint64_t s = 0;
  for (int i = 0; i < cfg.W; i++) {
    _Atomic uint64_t *p = (_Atomic uint64_t *)((uint8_t *)&shm->slots[i] + off);
    s += atomic_load_explicit(p, memory_order_relaxed);
  }
  return s;
}
#define SUM(field) sum_slot(offsetof(struct wslot, field))

static int all_flag(size_t off) {
  for (int i = 0; i < cfg.W; i++) {
    _Atomic int *p = (_Atomic int *)((uint8_t *)&shm->slots[i] + off);
    if (!atomic_load_explicit(p, memory_order_acquire)) return 0;
  }
  return 1;
}

/* emits the phases up to idx that were skipped (runs cut short), sampling what is due */
static void advance_to(int idx) {
  while (phase_emitted < idx) {
    int next = phase_emitted + 1;
    if (next == 3 && !ru_m_done) {
      getrusage(RUSAGE_SELF, &ru_m);
      ru_m_done = 1;
      if (cfg.broker_pid) next_rss = mono_ns() + 250000000LL;
    }
    if (next == 4) {
      if (!ru_d_done) {
        getrusage(RUSAGE_SELF, &ru_d);
        ru_d_done = 1;
      }
      connected_at_drain = (long)SUM(connected_now);
      if (cfg.broker_pid) { /* the median of the samples of the measured window */
        sample_rss();
        if (nrss) {
          qsort(rss_samples, (size_t)nrss, sizeof(long), cmp_long);
          rss_after = rss_samples[nrss / 2];
        }
      }
    }
    emit_phase(next);
  }
}

static uint64_t *live_prev, *live_cur;
static uint64_t prog_sent, prog_recv;
static int64_t prog_last;

static void progress(int64_t now) {
  uint64_t sent = SUM(sent_total), recv = SUM(recv_total), conn = SUM(connected_now);
  double dt = (double)(now - prog_last) / 1e9;
  if (dt <= 0) dt = 1;
  double sr = (double)(sent - prog_sent) / dt, rr = (double)(recv - prog_recv) / dt;
  memset(live_cur, 0, HIST_LEN * sizeof(uint64_t));
  for (int w = 0; w < cfg.W; w++) {
    const uint64_t *c = shm->slots[w].live.counts;
    for (uint32_t i = 0; i < HIST_LEN; i++) live_cur[i] += __atomic_load_n(&c[i], __ATOMIC_RELAXED);
  }
  uint64_t tot = 0;
  for (uint32_t i = 0; i < HIST_LEN; i++) {
    uint64_t d = live_cur[i] >= live_prev[i] ? live_cur[i] - live_prev[i] : 0;
    live_prev[i] = live_cur[i];
    live_cur[i] = d;
    tot += d;
  }
  uint64_t p50 = hist_counts_percentile(live_cur, tot, 50), p99 = hist_counts_percentile(live_cur, tot, 99);
  char line[400];
  if (cfg.progress_json)
    snprintf(line, sizeof line,
             "{\"event\":\"progress\",\"t\":%.0f,\"connected\":%llu,\"sent\":%llu,\"received\":%llu,"
             "\"sent_rate\":%.1f,\"recv_rate\":%.1f,\"p50_us\":%llu,\"p99_us\":%llu}\n",
             since_start_ms(), (unsigned long long)conn, (unsigned long long)sent,
             (unsigned long long)recv, sr, rr, (unsigned long long)p50, (unsigned long long)p99);
  else
    snprintf(line, sizeof line,
             "[%7.1fs] %-9s conn %llu/%ld  sent %llu (%.0f/s)  recv %llu (%.0f/s)  p50 %lluus  p99 %lluus\n",
             since_start_ms() / 1000.0, phase_names[phase_emitted < 0 ? 0 : phase_emitted],
             (unsigned long long)conn, cfg.N, (unsigned long long)sent, sr, (unsigned long long)recv, rr,
             (unsigned long long)p50, (unsigned long long)p99);
  emit_line(line);
  prog_sent = sent;
  prog_recv = recv;
  prog_last = now;
}

static void on_signal(int sig) {
  (void)sig;
  sig_count++;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "fleetmq-nbench: hard deadline passed, aborting\n";
  if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */
  }
  for (int i = 0; i < nchildren; i++) kill(children[i], SIGKILL);
  _exit(4);
}

static int64_t secs(double s) { return (int64_t)(s * 1e9); }

static void sleep_until(int64_t t) {
  struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
  clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static double run_measure_s;
static double connect_s;
static char started_at[64];

static void control(void) {
  int64_t now = mono_ns();
  int64_t per_worker = per_worker_max(cfg.W);
  int64_t conn_bound =
      cfg.conn_interval_ns > 0
          ? (int64_t)cfg.N * cfg.conn_interval_ns + secs(cfg.conn_timeout) + secs(2)
          : (per_worker / 512 + 1) * secs(cfg.conn_timeout) + secs(2);
  int64_t deadline = now + conn_bound; /* of the current phase */
  double total_s = (double)(conn_bound + secs(cfg.conn_timeout)) / 1e9 + cfg.warmup + cfg.duration + cfg.drain + 30;
  signal(SIGALRM, on_alarm);
  alarm((unsigned)ceil(total_s));

  int phase = PH_CONNECT;
  int64_t t_base = now;
  int64_t drain_end = T_UNSET;
  prog_last = now;
  int64_t next_prog = cfg.t0 + secs(1);
  int stop_seen = 0;

  for (;;) {
    now = mono_ns();
    if (cfg.use_procs) reap_early();
    int stop = sig_count > 0;
    if (stop) aborted = 1;
    if (sig_count > 1) break;
    if (phase == PH_CONNECT) {
      int done = all_flag(offsetof(struct wslot, connect_done));
      if (done || now > deadline || stop) {
        connect_s = (double)(now - t_base) / 1e9;
        if (!done && !stop) ctl_error("connect phase deadline (%.1f s) passed", (double)conn_bound / 1e9);
        if (stop || SUM(connected) == 0) break;
        phase = PH_SUBSCRIBE;
        atomic_store_explicit(&shm->phase, PH_SUBSCRIBE, memory_order_release);
        advance_to(1);
        deadline = now + secs(cfg.conn_timeout) + secs(1);
      }
    } else if (phase == PH_SUBSCRIBE) {
      int done = all_flag(offsetof(struct wslot, subscribe_done));
      if (done || now > deadline || stop) {
        if (stop) break;
        uint32_t nok = 0;
        for (long i = 0; i < cfg.S; i++) nok += atomic_load(&shm->sub_ok[i]);
        for (long p = 0; p < cfg.P; p++) {
          uint32_t f = 0;
          if (cfg.pairs) f = atomic_load(&shm->sub_ok[p]);
          else if (cfg.scen == SC_FANOUT) f = nok;
          else if (cfg.scen == SC_FANIN) f = nok > 0;
          shm->fan[p] = f;
        }
        if (cfg.combined && nok < (uint32_t)cfg.S)
          ctl_error("%ld of %ld subscribers are not subscribed", cfg.S - (long)nok, cfg.S);
        now = mono_ns();
        atomic_store(&shm->t_run, now);
        atomic_store(&shm->t_measure, now + secs(cfg.warmup));
        atomic_store(&shm->t_drain, now + secs(cfg.warmup) + secs(cfg.duration));
        phase = PH_RUN;
        atomic_store_explicit(&shm->phase, PH_RUN, memory_order_release);
        advance_to(2);
      }
    } else if (phase == PH_RUN) {
      int64_t tm = atomic_load(&shm->t_measure), td = atomic_load(&shm->t_drain);
      int cut = (stop && !stop_seen) ||
                (cfg.L && atomic_load(&shm->limit_used) >= cfg.L && now < td && phase_emitted < 4);
      if (stop) stop_seen = 1;
      if (cut && now + 20000000 < td) {
        /* end the window early (signal, or -L reached): everyone sees it before it passes */
        td = now + 20000000;
        if (tm > td) {
          tm = td;
          atomic_store(&shm->t_measure, tm);
        }
        atomic_store(&shm->t_drain, td);
      }
      if (phase_emitted < 3 && now >= tm) advance_to(3);
      if (phase_emitted < 4 && now >= td) {
        advance_to(4);
        drain_end = td + secs(cfg.drain);
      }
      if (phase_emitted >= 4 && now >= td + 10000000) {
        /* every worker has published its final counts of the window before they are compared */
        int drained = all_flag(offsetof(struct wslot, sent_final)) &&
                      (!cfg.combined || SUM(recv_m) >= SUM(expected_m));
        if (drained || now >= drain_end) break;
      }
    }
    if (phase_emitted == 3 && now >= next_rss) {
      sample_rss();
      next_rss += 250000000LL;
    }
    if (now >= next_prog) {
      progress(now);
      while (next_prog <= now) next_prog += secs(1);
    }
    int64_t wake = now + 10000000;
    if (wake > next_prog) wake = next_prog;
    if (phase_emitted == 3 && wake > next_rss) wake = next_rss;
    if (phase == PH_RUN) {
      int64_t tm = atomic_load(&shm->t_measure), td = atomic_load(&shm->t_drain);
      if (phase_emitted < 3 && tm < wake) wake = tm;
      if (phase_emitted < 4 && td < wake) wake = td;
    }
    sleep_until(wake);
  }
  /* whatever was skipped, in order */
  int64_t tm = atomic_load(&shm->t_measure), td = atomic_load(&shm->t_drain);
  if (tm != T_UNSET && td != T_UNSET && td > tm) {
    int64_t end = td < now ? td : now;
    run_measure_s = end > tm ? (double)(end - tm) / 1e9 : 0;
  }
  if (phase_emitted < 4 && atomic_load(&shm->t_drain) != T_UNSET) {
    /* cut during the run: the window ends now */
    now = mono_ns();
    if (atomic_load(&shm->t_measure) > now) atomic_store(&shm->t_measure, now);
    if (atomic_load(&shm->t_drain) > now) atomic_store(&shm->t_drain, now);
    tm = atomic_load(&shm->t_measure);
    run_measure_s = (double)(now - tm) / 1e9;
  }
  if (connect_s == 0) connect_s = (double)(mono_ns() - t_base) / 1e9;
  advance_to(4);
  atomic_store_explicit(&shm->phase, PH_DONE, memory_order_release);
}

/* ------------------------------------------------------------------ result */

static double tv(struct timeval a) { return (double)a.tv_sec + (double)a.tv_usec / 1e6; }

static void put_jstr(FILE *f, const char *s) {
  char buf[4096];
  json_escape(buf, sizeof buf, s ? s : "");
  fprintf(f, "\"%s\"", buf);
}

struct lsum {
  uint64_t count, min, p50, p90, p99, p999, max;
  double mean;
};

static struct lsum summarize(const hist_t *h) {
  struct lsum l;
  memset(&l, 0, sizeof l);
  if (!h->total) return l;
  l.count = h->total;
  l.min = h->min;
  l.mean = round(hist_mean(h) * 10) / 10;
  l.p50 = hist_percentile(h, 50);
  l.p90 = hist_percentile(h, 90);
  l.p99 = hist_percentile(h, 99);
  l.p999 = hist_percentile(h, 99.9);
  l.max = h->max;
  return l;
}

static void put_lsum(FILE *f, const char *name, const struct lsum *l) {
  fprintf(f,
          ",\"%s\":{\"count\":%llu,\"min\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,"
          "\"p999\":%llu,\"max\":%llu}",
          name, (unsigned long long)l->count, (unsigned long long)l->min, l->mean, (unsigned long long)l->p50,
          (unsigned long long)l->p90, (unsigned long long)l->p99, (unsigned long long)l->p999,
          (unsigned long long)l->max);
}

static double r3(double v) { return round(v * 1000) / 1000; }
static double r1(double v) { return round(v * 10) / 10; }

static int write_result(void) {
  struct counters k;
  memset(&k, 0, sizeof k);
  hist_t *h = calloc(1, sizeof *h), *ch = calloc(1, sizeof *ch);
  if (!h || !ch) exit(3);
  hist_init(h);
  hist_init(ch);
  struct errtab errs;
  memset(&errs, 0, sizeof errs);
  double cu = 0, cs = 0;
  if (ru_m_done && ru_d_done) {
    cu = tv(ru_d.ru_utime) - tv(ru_m.ru_utime);
    cs = tv(ru_d.ru_stime) - tv(ru_m.ru_stime);
  }
  int missing = 0;
  for (int i = 0; i < cfg.W; i++) {
    if (!got_part[i]) {
      missing++;
      continue;
    }
    const struct partial *p = &parts[i];
    const uint64_t *src = (const uint64_t *)&p->k;
    uint64_t *dst = (uint64_t *)&k;
    for (size_t j = 0; j < sizeof k / sizeof(uint64_t); j++) dst[j] += src[j];
    hist_merge(h, &p->hist);
    hist_merge(ch, &p->chist);
    errtab_merge(&errs, &p->errs);
    cu += p->cpu_user;
    cs += p->cpu_sys;
  }
  /* the run's own findings first, then the workers' */
  struct errtab all;
  memset(&all, 0, sizeof all);
  if (k.connected == 0) errtab_add(&all, "no connection succeeded");
  errtab_merge(&all, &ctl_errs);
  errtab_merge(&all, &errs);
  if (k.window_released) {
    errtab_add(&all, "window: messages unreceived for 2 s released from the window (lost unless they arrive later)");
    for (int i = 0; i < all.n; i++)
      if (!strncmp(all.e[i].msg, "window: ", 8)) all.e[i].count = k.window_released;
  }
  if (k.pubs_idle) {
    char m[ERR_LEN];
    snprintf(m, sizeof m, "%llu publishers idle: their subscriber is not subscribed", (unsigned long long)k.pubs_idle);
    errtab_add(&all, m);
  }
  if (k.foreign) {
    char m[ERR_LEN];
    snprintf(m, sizeof m, "%llu messages received that this run did not send", (unsigned long long)k.foreign);
    errtab_add(&all, m);
  }
  if (cfg.combined && h->total != k.recv_m) {
    char m[ERR_LEN];
    snprintf(m, sizeof m, "internal: latency count %llu != received %llu", (unsigned long long)h->total,
             (unsigned long long)k.recv_m);
    errtab_add(&all, m);
  }
  uint64_t lost = cfg.combined && k.expected_m > k.recv_m ? k.expected_m - k.recv_m : 0;
  double ms = r3(run_measure_s);
  uint64_t denom = k.recv_m ? k.recv_m : k.sent_m;
  double us_per_msg = denom ? r3((cu + cs) * 1e6 / (double)denom) : 0;
  struct lsum lat = summarize(h), con = summarize(ch);
  long open_conns = connected_at_drain;
  long per_conn = -1;
  if (cfg.scen == SC_CONN && cfg.broker_pid && rss_before >= 0 && rss_after >= 0 && open_conns > 0)
    per_conn = lround((double)(rss_after - rss_before) / (double)open_conns);

  char *buf = NULL;
  size_t blen = 0;
  FILE *f = open_memstream(&buf, &blen);
  if (!f) exit(3);
  fprintf(f, "{\"tool\":\"%s\",\"version\":1,\"scenario\":\"%s\",\"params\":{", NBENCH_TOOL, cfg.scen_name);
  fprintf(f, "\"host\":");
  put_jstr(f, cfg.host_arg);
  fprintf(f, ",\"port\":%d,\"V\":%d,\"q\":%d,\"s\":%ld,\"I\":%g,\"L\":%llu,\"F\":%ld,\"i\":%g,\"R\":%g,\"n\":%ld,\"k\":%d",
          cfg.port, cfg.V, cfg.q, cfg.s, cfg.I_ms, (unsigned long long)cfg.L, cfg.F, cfg.i_ms, cfg.R, cfg.n, cfg.k);
  fprintf(f, ",\"C\":%s,\"x\":%ld", cfg.clean ? "true" : "false", cfg.x);
  if (cfg.scen == SC_FANOUT || cfg.scen == SC_FANIN) fprintf(f, ",\"pubs\":%ld,\"subs\":%ld", cfg.P, cfg.S);
  else fprintf(f, ",\"c\":%ld", cfg.c);
  if (cfg.t) {
    fprintf(f, ",\"t\":");
    put_jstr(f, cfg.t);
  }
  fprintf(f, ",\"payload_hdrs\":\"%s\",\"ws\":false,\"tls\":false", cfg.ts ? "ts" : "");
  fprintf(f, ",\"duration\":%g,\"warmup\":%g,\"drain\":%g,\"window\":%ld", cfg.duration, cfg.warmup, cfg.drain,
          cfg.window);
  fprintf(f, ",\"workers\":%d,\"processes\":%d", cfg.W, cfg.use_procs ? cfg.W : 1);
  if (cfg.ifaddr_arg) {
    fprintf(f, ",\"ifaddr\":");
    put_jstr(f, cfg.ifaddr_arg);
  }
  if (cfg.prefix) {
    fprintf(f, ",\"prefix\":");
    put_jstr(f, cfg.prefix);
  }
  if (cfg.shortids) fprintf(f, ",\"shortids\":true");
  if (cfg.broker_pid) fprintf(f, ",\"broker_pid\":%d", cfg.broker_pid);
  fprintf(f, ",\"connect_timeout\":%g,\"max_per_proc\":%ld", cfg.conn_timeout, cfg.proc_conns);
  fprintf(f, "},\"started_at\":\"%s\",\"measure_s\":%g", started_at, ms);
  fprintf(f, ",\"connections\":{\"attempted\":%llu,\"connected\":%llu,\"refused\":%llu,\"failed\":%llu,\"dropped\":%llu}",
          (unsigned long long)k.attempted, (unsigned long long)k.connected, (unsigned long long)k.refused,
          (unsigned long long)k.failed, (unsigned long long)k.dropped);
  fprintf(f, ",\"messages\":{\"sent\":%llu,\"received\":%llu,\"expected\":%llu,\"lost\":%llu,\"skipped\":%llu}",
          (unsigned long long)k.sent_m, (unsigned long long)k.recv_m, (unsigned long long)(cfg.combined ? k.expected_m : 0),
          (unsigned long long)lost, (unsigned long long)k.skipped_m);
  fprintf(f, ",\"rates\":{\"sent_per_s\":%g,\"received_per_s\":%g}", ms > 0 ? r1((double)k.sent_m / ms) : 0,
          ms > 0 ? r1((double)k.recv_m / ms) : 0);
  put_lsum(f, "latency_us", &lat);
  put_lsum(f, "connect_us", &con);
  fprintf(f, ",\"generator_cpu\":{\"user_s\":%g,\"system_s\":%g,\"us_per_msg\":%g}", r3(cu), r3(cs), us_per_msg);
  if (cfg.broker_pid) {
    fprintf(f, ",\"broker_rss\":{\"before_bytes\":%ld,\"after_bytes\":%ld}", rss_before < 0 ? 0 : rss_before,
            rss_after < 0 ? (read_rss(cfg.broker_pid) < 0 ? 0 : read_rss(cfg.broker_pid)) : rss_after);
    if (per_conn != -1) fprintf(f, ",\"broker_rss_per_conn_bytes\":%ld", per_conn);
  }
  fprintf(f, ",\"errors\":[");
  for (int i = 0; i < all.n; i++) {
    char m[ERR_LEN + 40];
    if (all.e[i].count > 1)
      snprintf(m, sizeof m, "%s (x%llu)", all.e[i].msg, (unsigned long long)all.e[i].count);
    else
      snprintf(m, sizeof m, "%s", all.e[i].msg);
    if (i) fputc(',', f);
    put_jstr(f, m);
  }
  if (all.other) {
    char m[80];
    snprintf(m, sizeof m, "%llu further errors of other kinds", (unsigned long long)all.other);
    if (all.n) fputc(',', f);
    put_jstr(f, m);
  }
  fprintf(f, "]}\n");
  fclose(f);

  /* the Markdown table (as bench/ writes it) */
  char *md = NULL;
  size_t mdlen = 0;
  FILE *m = open_memstream(&md, &mdlen);
  if (!m) exit(3);
  fprintf(m, "| fleetmq-nbench | |\n| --- | --- |\n");
  fprintf(m, "| scenario | %s — V%d, QoS %d, %ld B, -I %g ms, window %ld |\n", cfg.scen_name, cfg.V, cfg.q, cfg.s,
          cfg.I_ms, cfg.window);
  fprintf(m, "| started | %s |\n| measured | %g s |\n", started_at, ms);
  fprintf(m, "| connections | %llu of %llu (refused %llu, failed %llu, dropped %llu) |\n",
          (unsigned long long)k.connected, (unsigned long long)k.attempted, (unsigned long long)k.refused,
          (unsigned long long)k.failed, (unsigned long long)k.dropped);
  if (con.count)
    fprintf(m, "| connect (µs) | p50 %llu, p99 %llu, max %llu |\n", (unsigned long long)con.p50,
            (unsigned long long)con.p99, (unsigned long long)con.max);
  else
    fprintf(m, "| connect (µs) | — |\n");
  fprintf(m, "| messages | sent %llu, received %llu, expected %llu, lost %llu, skipped slots %llu |\n",
          (unsigned long long)k.sent_m, (unsigned long long)k.recv_m,
          (unsigned long long)(cfg.combined ? k.expected_m : 0), (unsigned long long)lost,
          (unsigned long long)k.skipped_m);
  fprintf(m, "| rates (msg/s) | sent %g, received %g |\n", ms > 0 ? r1((double)k.sent_m / ms) : 0,
          ms > 0 ? r1((double)k.recv_m / ms) : 0);
  if (lat.count)
    fprintf(m, "| latency (µs) | p50 %llu, p90 %llu, p99 %llu, p99.9 %llu, max %llu (min %llu, mean %.1f, n %llu) |\n",
            (unsigned long long)lat.p50, (unsigned long long)lat.p90, (unsigned long long)lat.p99,
            (unsigned long long)lat.p999, (unsigned long long)lat.max, (unsigned long long)lat.min, lat.mean,
            (unsigned long long)lat.count);
  else
    fprintf(m, "| latency (µs) | — |\n");
  fprintf(m, "| generator CPU | user %g s, system %g s, %g µs/msg |\n", r3(cu), r3(cs), us_per_msg);
  if (cfg.broker_pid && rss_before >= 0 && rss_after >= 0) {
    fprintf(m, "| broker RSS | %.1f MiB → %.1f MiB", (double)rss_before / 1048576.0, (double)rss_after / 1048576.0);
    if (per_conn != -1) fprintf(m, " (%ld B per connection)", per_conn);
    fprintf(m, " |\n");
  }
  if (all.n) {
    fprintf(m, "| errors | ");
    for (int i = 0; i < all.n; i++) {
      if (i) fprintf(m, "; ");
      for (const char *q = all.e[i].msg; *q; q++) {
        if (*q == '|') fputc('\\', m);
        fputc(*q, m);
      }
      if (all.e[i].count > 1) fprintf(m, " (x%llu)", (unsigned long long)all.e[i].count);
    }
    fprintf(m, " |\n");
  }
  fclose(m);

  int rc = 0;
  if (cfg.json) {
    FILE *jf = fopen(cfg.json, "w");
    if (!jf || fwrite(buf, 1, blen, jf) != blen || fclose(jf) != 0) {
      fprintf(stderr, "%s: cannot write %s: %s\n", NBENCH_TOOL, cfg.json, strerror(errno));
      rc = 1;
    }
  }
  if (cfg.md) {
    FILE *mf = fopen(cfg.md, "w");
    if (!mf || fwrite(md, 1, mdlen, mf) != mdlen || fclose(mf) != 0) {
      fprintf(stderr, "%s: cannot write %s: %s\n", NBENCH_TOOL, cfg.md, strerror(errno));
      rc = 1;
    }
  }
  if (!cfg.progress_json) {
    fputc('\n', stdout);
    fwrite(md, 1, mdlen, stdout);
    fputc('\n', stdout);
  }
  fwrite(buf, 1, blen, stdout);
  fflush(stdout);
  free(buf);
  free(md);
  free(h);
  free(ch);
  if (k.connected == 0 || missing || aborted) rc = 1;
  return rc;
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  resolve();
  derive();
  setup_shm();
  live_prev = calloc(HIST_LEN, sizeof(uint64_t));
  live_cur = calloc(HIST_LEN, sizeof(uint64_t));
  if (!live_prev || !live_cur) exit(3);

  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  struct timespec rt;
  clock_gettime(CLOCK_REALTIME, &rt);
  struct tm tmv;
  gmtime_r(&rt.tv_sec, &tmv);
  char tb[32];
  strftime(tb, sizeof tb, "%Y-%m-%dT%H:%M:%S", &tmv);
  snprintf(started_at, sizeof started_at, "%s.%03dZ", tb, (int)(rt.tv_nsec / 1000000) % 1000);

  cfg.t0 = mono_ns();
  if (cfg.broker_pid) {
    rss_before = read_rss(cfg.broker_pid);
    if (rss_before < 0) fprintf(stderr, "%s: cannot read /proc/%d/status\n", NBENCH_TOOL, cfg.broker_pid);
  }
  emit_phase(0);
  atomic_store(&shm->t_base, mono_ns());
  atomic_store_explicit(&shm->phase, PH_CONNECT, memory_order_release);
  start_workers();
  control();
  collect();
  alarm(0);
  emit_phase(5);
  return write_result();
}
