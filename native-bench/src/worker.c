/* One worker: an epoll loop over its share of the clients (a thread, or a child process
 * above ~19k connections). MQTT 3.1 / 3.1.1 / 5.0 over plain TCP, QoS 0/1/2. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbench.h"

#define PENDING_CAP 512          /* TCP + CONNACK handshakes in progress per worker */
#define HIGH_WATER (64 * 1024)   /* a publisher stops queueing above this many unsent bytes */
#define SCRATCH (256 * 1024)
#define MAX_EVENTS 512
#define BATCH 64                 /* messages per publisher per pass when unpaced */
#define WINDOW_STALL_NS 2000000000LL /* as bench/: a window stuck this long is released */
#define IDLE_TICK_NS 10000000LL  /* the loop wakes at least every 10 ms */

enum cstate { C_NEW, C_TCP, C_MQTT, C_UP, C_DEAD };
enum role { R_IDLE, R_SUB, R_PUB };
enum substate { S_NONE, S_SENT, S_OK, S_FAILED };
enum step { ST_REMOVE, ST_MORE, ST_BLOCKED, ST_WINBLOCKED };

typedef struct client {
  int fd;
  uint8_t st, role, sub_st, out_on;
  uint32_t gidx, ridx, seq;
  int64_t t0;       /* connect or subscribe start */
  int64_t last_tx;
  char *id;
  char *topic;      /* publish topic or subscription filter */
  uint16_t topic_len;
  uint8_t *rb;
  uint32_t rlen, rcap;
  uint8_t *wb;
  uint32_t woff, wlen, wcap;
  /* publisher */
  uint32_t fan, inflight, max_inflight;
  uint16_t pid;
  int64_t next_due, last_prog;
  uint64_t sent, forgiven, recv_seen;
} client;

typedef struct wk {
  int id, ep;
  client *cl;
  uint32_t ncl;
  uint32_t next_conn, pending, resolved;
  uint32_t subs_pending;
  int connect_done, subscribe_done, sent_final;
  client **ready;
  uint32_t nready;
  client **heap;
  uint32_t nheap;
  uint8_t *scratch;
  uint8_t *zeros;
  struct counters k;
  struct errtab errs;
  hist_t *hist, *chist;
  struct wslot *slot;
  int phase;
  int64_t t_run, t_measure, t_drain;
  int64_t last_sweep, last_ka;
  int64_t last_slots; /* last pass over the due paced publishers */
  int any_more, any_win;
  int ru_m_done, ru_d_done;
  struct rusage ru_m, ru_d;
} wk;

/* ------------------------------------------------------------------ helpers */

static void put16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static uint32_t get16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static uint32_t get32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static int varint_put(uint8_t *p, uint32_t v) {
  int n = 0;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v) b |= 0x80;
    p[n++] = b;
  } while (v);
  return n;
}
/* returns bytes used, 0 if incomplete, -1 if malformed */
static int varint_get(const uint8_t *p, size_t avail, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    if ((size_t)i >= avail) return 0;
    v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      *out = v;
      return i + 1;
    }
  }
  return -1;
}

/* counts an error; an event on stderr for its 1st, 10th, 100th, ... occurrence in this worker */
static void werr(wk *w, const char *msg) {
  uint64_t n = errtab_add(&w->errs, msg);
  uint64_t p = 1;
  while (p < n && p <= UINT64_MAX / 10) p *= 10;
  if (p == n) emit_error(msg, n);
}

static void set_out(wk *w, client *c, int on) {
  if (c->out_on == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->out_on = (uint8_t)on;
}

static uint8_t *wreserve(client *c, uint32_t n) {
  if (c->woff == c->wlen) c->woff = c->wlen = 0;
  if (c->wlen + n > c->wcap) {
    if (c->woff > 0) {
      memmove(c->wb, c->wb + c->woff, c->wlen - c->woff);
      c->wlen -= c->woff;
      c->woff = 0;
    }
    if (c->wlen + n > c->wcap) {
      uint32_t cap = c->wcap ? c->wcap : 1024;
      while (cap < c->wlen + n) cap *= 2;
      uint8_t *nb = realloc(c->wb, cap);
      if (!nb) {
        fprintf(stderr, "out of memory\n");
        exit(3);
      }
      c->wb = nb;
      c->wcap = cap;
    }
  }
  uint8_t *p = c->wb + c->wlen;
  c->wlen += n;
  return p;
}

static uint32_t pending_out(const client *c) { return c->wlen - c->woff; }

static void free_bufs(client *c) {
  free(c->rb);
  free(c->wb);
  c->rb = c->wb = NULL;
  c->rlen = c->rcap = c->woff = c->wlen = c->wcap = 0;
}

/* -h hosts round-robin; the two clients of a p2p / wildcard-scale pair share a host */
static const struct endpoint *host_of(const client *c) {
  uint32_t k = cfg.pairs ? c->ridx : c->gidx;
  return &cfg.hosts[k % (uint32_t)cfg.nhosts];
}

static void close_client(client *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->st = C_DEAD;
  free_bufs(c);
}

/* a handshake that did not complete */
static void fail_connect(wk *w, client *c, int refused, const char *why) {
  char msg[ERR_LEN];
  const struct endpoint *ep = host_of(c);
  snprintf(msg, sizeof msg, "connect %s: %s", ep->name, why);
  if (c->st == C_TCP || c->st == C_MQTT) w->pending--;
  close_client(c);
  if (refused) w->k.refused++;
  else w->k.failed++;
  w->resolved++;
  werr(w, msg);
}

/* an established connection that went away */
static void drop(wk *w, client *c, const char *why) {
  if (c->st == C_TCP || c->st == C_MQTT) {
    fail_connect(w, c, 0, why);
    return;
  }
  if (c->st != C_UP) return;
  char msg[ERR_LEN];
  snprintf(msg, sizeof msg, "connection dropped (%s): %s",
           c->role == R_PUB ? "publisher" : c->role == R_SUB ? "subscriber" : "idle", why);
  if (c->sub_st == S_SENT) {
    c->sub_st = S_FAILED;
    w->k.sub_failed++;
    w->subs_pending--;
  }
  if (c->role == R_SUB) /* no longer holds up the fanout window */
    atomic_store_explicit(&shm->sub_ok[c->ridx], 0, memory_order_relaxed);
  close_client(c);
  w->k.dropped++;
  werr(w, msg);
}

static int flush(wk *w, client *c) {
  while (c->woff < c->wlen) {
    ssize_t n = send(c->fd, c->wb + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->woff += (uint32_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_out(w, c, 1);
      return 0;
    }
    char why[120];
    snprintf(why, sizeof why, "send: %s", n < 0 ? strerror(errno) : "0 bytes");
    drop(w, c, why);
    return -1;
  }
  c->woff = c->wlen = 0;
  if (c->st == C_UP || c->st == C_MQTT) set_out(w, c, 0);
  return 0;
}

/* ------------------------------------------------------------------ packets */

static void put_str(uint8_t **p, const char *s, size_t n) {
  put16(*p, (uint32_t)n);
  memcpy(*p + 2, s, n);
  *p += 2 + n;
}

static void send_connect(wk *w, client *c, int64_t now) {
  size_t idl = strlen(c->id);
  size_t ul = cfg.user ? strlen(cfg.user) : 0, pl = cfg.pass ? strlen(cfg.pass) : 0;
  const char *proto = cfg.V == 3 ? "MQIsdp" : "MQTT";
  size_t protol = strlen(proto);
  uint8_t props[8];
  int propl = 0;
  if (cfg.V == 5 && cfg.x > 0) {
    props[0] = 0x11; /* Session Expiry Interval */
    uint32_t x = (uint32_t)cfg.x;
    props[1] = (uint8_t)(x >> 24);
    props[2] = (uint8_t)(x >> 16);
    props[3] = (uint8_t)(x >> 8);
    props[4] = (uint8_t)x;
    propl = 5;
  }
  size_t rl = 2 + protol + 1 + 1 + 2 + (cfg.V == 5 ? 1 + (size_t)propl : 0) + 2 + idl +
              (cfg.user ? 2 + ul : 0) + (cfg.pass ? 2 + pl : 0);
  uint8_t *p = wreserve(c, (uint32_t)(rl + 5)), *start = p;
  *p++ = 0x10;
  p += varint_put(p, (uint32_t)rl);
  put_str(&p, proto, protol);
  *p++ = (uint8_t)(cfg.V == 5 ? 5 : cfg.V == 3 ? 3 : 4);
  *p++ = (uint8_t)((cfg.clean ? 0x02 : 0) | (cfg.user ? 0x80 : 0) | (cfg.pass ? 0x40 : 0));
  put16(p, (uint32_t)cfg.k);
  p += 2;
  if (cfg.V == 5) {
    *p++ = (uint8_t)propl;
    memcpy(p, props, (size_t)propl);
    p += propl;
  }
  put_str(&p, c->id, idl);
  if (cfg.user) put_str(&p, cfg.user, ul);
  if (cfg.pass) put_str(&p, cfg.pass, pl);
  c->wlen -= (uint32_t)(rl + 5 - (size_t)(p - start)); /* give back the unused varint room */
  c->last_tx = now;
  flush(w, c);
}

static void send_ack(client *c, uint8_t type, uint32_t pid) {
  uint8_t *p = wreserve(c, 4);
  p[0] = type;
  p[1] = 2;
  put16(p + 2, pid);
}

static void send_subscribe(wk *w, client *c, int64_t now) {
  size_t rl = 2 + (cfg.V == 5 ? 1 : 0) + 2 + c->topic_len + 1;
  uint8_t *p = wreserve(c, (uint32_t)(rl + 5)), *start = p;
  *p++ = 0x82;
  p += varint_put(p, (uint32_t)rl);
  put16(p, 1);
  p += 2;
  if (cfg.V == 5) *p++ = 0;
  put_str(&p, c->topic, c->topic_len);
  *p++ = (uint8_t)cfg.q;
  c->wlen -= (uint32_t)(rl + 5 - (size_t)(p - start));
  c->sub_st = S_SENT;
  c->t0 = now;
  c->last_tx = now;
  w->subs_pending++;
  flush(w, c);
}

/* appends one PUBLISH; returns its send timestamp */
static int64_t put_publish(wk *w, client *c) {
  uint32_t s = (uint32_t)cfg.s;
  size_t rl = 2 + c->topic_len + (cfg.q ? 2 : 0) + (cfg.V == 5 ? 1 : 0) + s;
  uint8_t *p = wreserve(c, (uint32_t)(rl + 5)), *start = p;
  *p++ = (uint8_t)(0x30 | (cfg.q << 1));
  p += varint_put(p, (uint32_t)rl);
  put_str(&p, c->topic, c->topic_len);
  if (cfg.q) {
    if (++c->pid == 0) c->pid = 1;
    put16(p, c->pid);
    p += 2;
  }
  if (cfg.V == 5) *p++ = 0;
  int64_t now = mono_ns();
  if (cfg.ts) {
    uint64_t t = (uint64_t)now;
    for (int i = 7; i >= 0; i--) {
      p[i] = (uint8_t)t;
      t >>= 8;
    }
    p[8] = (uint8_t)(c->ridx >> 24);
    p[9] = (uint8_t)(c->ridx >> 16);
    p[10] = (uint8_t)(c->ridx >> 8);
    p[11] = (uint8_t)c->ridx;
    memcpy(p + 12, w->zeros, s - 12);
  } else {
    memcpy(p, w->zeros, s);
  }
  p += s;
  c->wlen -= (uint32_t)(rl + 5 - (size_t)(p - start));
  c->last_tx = now;
  return now;
}

/* ------------------------------------------------------------------ receive */

static void on_message(wk *w, const client *c, const uint8_t *pl, uint32_t n, int64_t now) {
  w->k.recv_total++;
  int have_ts = cfg.ts && n >= 12;
  uint64_t ts = have_ts ? get64(pl) : 0;
  if (cfg.combined) {
    if (!have_ts) {
      w->k.foreign++;
      return;
    }
    uint32_t pub = get32(pl + 8);
    if (pub >= (uint32_t)cfg.P) {
      w->k.foreign++;
      return;
    }
    atomic_fetch_add_explicit(&shm->recv[pub], 1, memory_order_relaxed);
    if (shm->recv_ps) { /* only this worker writes this cell */
      _Atomic uint64_t *cell = &shm->recv_ps[(size_t)pub * (size_t)cfg.S + c->ridx];
      atomic_store_explicit(cell, atomic_load_explicit(cell, memory_order_relaxed) + 1, memory_order_relaxed);
    }
    if ((int64_t)ts > now) return; /* not our clock */
    uint64_t lat = ((uint64_t)now - ts) / 1000;
    hist_record(&w->slot->live, lat);
    if ((int64_t)ts >= w->t_measure && (int64_t)ts < w->t_drain) {
      w->k.recv_m++;
      hist_record(w->hist, lat);
    }
    return;
  }
  /* sub: counted by receive time; latency when the payload carries a timestamp */
  int measured = now >= w->t_measure && now < w->t_drain;
  if (measured) w->k.recv_m++;
  if (have_ts && (int64_t)ts <= now && now - (int64_t)ts < 60 * 1000000000LL) {
    uint64_t lat = ((uint64_t)now - ts) / 1000;
    hist_record(&w->slot->live, lat);
    if (measured) hist_record(w->hist, lat);
  }
}

static void connack_reason(int V, unsigned rc, char *buf, size_t cap) {
  static const char *const m[] = {"accepted", "unacceptable protocol version", "identifier rejected",
                                  "server unavailable", "bad user name or password", "not authorized"};
  if (V != 5 && rc < 6) snprintf(buf, cap, "%s", m[rc]);
  else snprintf(buf, cap, "reason code 0x%02x", rc);
}

/* reads Receive Maximum (0x21) out of CONNACK properties; other properties are skipped */
static uint32_t connack_receive_max(const uint8_t *p, uint32_t n) {
  uint32_t plen;
  int vb = varint_get(p, n, &plen);
  if (vb <= 0 || vb + plen > n) return 0;
  const uint8_t *q = p + vb, *end = q + plen;
  while (q < end) {
    uint8_t id = *q++;
    switch (id) {
      case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
        q += 1;
        break;
      case 0x13: case 0x22: case 0x23:
        q += 2;
        break;
      case 0x21:
        if (q + 2 > end) return 0;
        return get16(q);
      case 0x02: case 0x11: case 0x18: case 0x27:
        q += 4;
        break;
      case 0x0B: {
        uint32_t v;
        int b = varint_get(q, (size_t)(end - q), &v);
        if (b <= 0) return 0;
        q += b;
        break;
      }
      case 0x26:
        if (q + 2 > end) return 0;
        q += 2 + get16(q); /* the name; the value string follows */
        __attribute__((fallthrough));
      case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1A: case 0x1C:
      case 0x1F:
        if (q + 2 > end) return 0;
        q += 2 + get16(q);
        break;
      default:
        return 0;
    }
  }
  return 0;
}

/* one packet; returns -1 when the client was closed */
static int on_packet(wk *w, client *c, uint8_t h, const uint8_t *b, uint32_t n, int64_t now) {
  uint8_t type = h >> 4;
  switch (type) {
    case 2: { /* CONNACK */
      if (c->st != C_MQTT || n < 2) {
        drop(w, c, "unexpected CONNACK");
        return -1;
      }
      unsigned rc = b[1];
      if (rc != 0) {
        char why[80], reason[40];
        connack_reason(cfg.V, rc, reason, sizeof reason);
        snprintf(why, sizeof why, "CONNACK refused: %s", reason);
        fail_connect(w, c, 1, why);
        return -1;
      }
      if (cfg.V == 5 && c->role == R_PUB) {
        uint32_t rm = connack_receive_max(b + 2, n - 2);
        if (rm && rm < c->max_inflight) c->max_inflight = rm;
      }
      c->st = C_UP;
      hist_record(w->chist, (uint64_t)(now - c->t0) / 1000);
      w->pending--;
      w->resolved++;
      w->k.connected++;
      return 0;
    }
    case 3: { /* PUBLISH */
      unsigned qos = (h >> 1) & 3;
      if (n < 2) goto bad;
      uint32_t off = 2 + get16(b), pid = 0;
      if (qos) {
        if (off + 2 > n) goto bad;
        pid = get16(b + off);
        off += 2;
      }
      if (cfg.V == 5) {
        uint32_t pl;
        int vb = varint_get(b + off, n - off, &pl);
        if (vb <= 0 || off + (uint32_t)vb + pl > n) goto bad;
        off += (uint32_t)vb + pl;
      }
      if (off > n) goto bad;
      on_message(w, c, b + off, n - off, now);
      if (qos == 1) send_ack(c, 0x40, pid);
      else if (qos == 2) send_ack(c, 0x50, pid);
      return 0;
    }
    case 4: /* PUBACK */
    case 7: /* PUBCOMP */
      if (c->inflight) c->inflight--;
      return 0;
    case 5: /* PUBREC */
      if (n < 2) goto bad;
      if (n >= 3 && b[2] >= 0x80 && c->inflight) c->inflight--; /* 5.0 refusal ends the flow */
      else send_ack(c, 0x62, get16(b));
      return 0;
    case 6: /* PUBREL */
      if (n < 2) goto bad;
      send_ack(c, 0x70, get16(b));
      return 0;
    case 9: { /* SUBACK */
      if (n < 3 || c->sub_st != S_SENT) return 0;
      uint32_t off = 2;
      if (cfg.V == 5) {
        uint32_t pl;
        int vb = varint_get(b + off, n - off, &pl);
        if (vb <= 0) goto bad;
        off += (uint32_t)vb + pl;
      }
      if (off >= n) goto bad;
      w->subs_pending--;
      if (b[off] < 0x80) {
        c->sub_st = S_OK;
        w->k.sub_ok++;
        atomic_store_explicit(&shm->sub_ok[c->ridx], 1, memory_order_relaxed);
      } else {
        c->sub_st = S_FAILED;
        w->k.sub_failed++;
        char msg[ERR_LEN];
        snprintf(msg, sizeof msg, "subscribe refused (0x%02x)", b[off]);
        werr(w, msg);
      }
      return 0;
    }
    case 14: { /* DISCONNECT (5.0) */
      char why[64];
      snprintf(why, sizeof why, "DISCONNECT from server, reason 0x%02x", n >= 1 ? b[0] : 0);
      drop(w, c, why);
      return -1;
    }
    default: /* SUBACK/UNSUBACK/PINGRESP/AUTH: nothing to do */
      return 0;
  }
bad:
  drop(w, c, "malformed packet from server");
  return -1;
}

/* parses complete packets out of buf; returns bytes consumed or -1 when closed */
static long parse(wk *w, client *c, const uint8_t *buf, size_t len, int64_t now) {
  size_t off = 0;
  while (len - off >= 2) {
    uint32_t rl;
    int vb = varint_get(buf + off + 1, len - off - 1, &rl);
    if (vb == 0) break;
    if (vb < 0) {
      drop(w, c, "malformed remaining length");
      return -1;
    }
    size_t total = 1 + (size_t)vb + rl;
    if (len - off < total) break;
    if (on_packet(w, c, buf[off], buf + off + 1 + vb, rl, now) < 0) return -1;
    off += total;
  }
  return (long)off;
}

static void on_readable(wk *w, client *c, int64_t now) {
  for (int round = 0; round < 4; round++) {
    ssize_t n;
    if (c->rlen == 0) {
      n = recv(c->fd, w->scratch, SCRATCH, MSG_DONTWAIT);
      if (n > 0) {
        long used = parse(w, c, w->scratch, (size_t)n, now);
        if (used < 0) return;
        size_t rest = (size_t)n - (size_t)used;
        if (rest) {
          if (c->rcap < rest) {
            uint32_t cap = 4096;
            while (cap < rest) cap *= 2;
            free(c->rb);
            c->rb = malloc(cap);
            if (!c->rb) exit(3);
            c->rcap = cap;
          }
          memcpy(c->rb, w->scratch + used, rest);
          c->rlen = (uint32_t)rest;
        }
      }
    } else {
      if (c->rcap - c->rlen < 16384) {
        uint32_t cap = c->rcap * 2;
        uint8_t *nb = realloc(c->rb, cap);
        if (!nb) exit(3);
        c->rb = nb;
        c->rcap = cap;
      }
      n = recv(c->fd, c->rb + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
      if (n > 0) {
        c->rlen += (uint32_t)n;
        long used = parse(w, c, c->rb, c->rlen, now);
        if (used < 0) return;
        memmove(c->rb, c->rb + used, c->rlen - (size_t)used);
        c->rlen -= (uint32_t)used;
      }
    }
    if (n == 0) {
      drop(w, c, "closed by the server");
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      char why[120];
      snprintf(why, sizeof why, "recv: %s", strerror(errno));
      drop(w, c, why);
      return;
    }
    if (n < SCRATCH / 2) break; /* probably drained */
  }
  if (pending_out(c)) flush(w, c); /* acks */
}

/* ------------------------------------------------------------------ connect */

static void start_connect(wk *w, client *c, int64_t now) {
  const struct endpoint *ep = host_of(c);
  w->k.attempted++;
  c->t0 = now;
  int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    char why[120];
    snprintf(why, sizeof why, "socket: %s", strerror(errno));
    fail_connect(w, c, 0, why);
    return;
  }
  c->fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cfg.nifaddrs) {
    int i = (int)(c->gidx % (uint32_t)cfg.nifaddrs);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&cfg.ifaddrs[i], cfg.ifaddr_len[i]) < 0) {
      char why[120];
      snprintf(why, sizeof why, "bind source address: %s", strerror(errno));
      fail_connect(w, c, 0, why);
      return;
    }
  }
  c->st = C_TCP;
  w->pending++;
  int r = connect(fd, (const struct sockaddr *)&ep->addr, ep->len);
  if (r < 0 && errno != EINPROGRESS) {
    int e = errno;
    fail_connect(w, c, e == ECONNREFUSED, strerror(e));
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    char why[120];
    snprintf(why, sizeof why, "epoll_ctl: %s", strerror(errno));
    fail_connect(w, c, 0, why);
    return;
  }
  c->out_on = 1;
}

static void on_tcp_connected(wk *w, client *c, int64_t now) {
  int err = 0;
  socklen_t el = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
  if (err) {
    fail_connect(w, c, err == ECONNREFUSED, strerror(err));
    return;
  }
  c->st = C_MQTT;
  send_connect(w, c, now);
}

static void on_event(wk *w, client *c, uint32_t ev, int64_t now) {
  if (c->st == C_DEAD || c->fd < 0) return;
  if (c->st == C_TCP) {
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_tcp_connected(w, c, now);
    return;
  }
  if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    on_readable(w, c, now);
    if (c->st == C_DEAD) return;
  }
  if ((ev & EPOLLOUT) && pending_out(c)) flush(w, c);
}

/* ------------------------------------------------------------------ publishers */

static void heap_push(wk *w, client *c) {
  uint32_t i = w->nheap++;
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (w->heap[p]->next_due <= c->next_due) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = c;
}

static client *heap_pop(wk *w) {
  client *top = w->heap[0];
  client *last = w->heap[--w->nheap];
  uint32_t i = 0, n = w->nheap;
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    int64_t mv = last->next_due;
    if (l < n && w->heap[l]->next_due < mv) {
      m = l;
      mv = w->heap[l]->next_due;
    }
    if (r < n && w->heap[r]->next_due < mv) m = r;
    if (m == i) break;
    w->heap[i] = w->heap[m];
    i = m;
  }
  if (n) w->heap[i] = last;
  return top;
}

/* messages of publisher c that every matching subscriber has received (fanout: the least
   any subscribed subscriber has; otherwise deliveries / subscribers per message) */
static uint64_t messages_done(const client *c) {
  if (shm->recv_ps) {
    const _Atomic uint64_t *row = &shm->recv_ps[(size_t)c->ridx * (size_t)cfg.S];
    uint64_t min = UINT64_MAX;
    for (long s = 0; s < cfg.S; s++) {
      if (!atomic_load_explicit(&shm->sub_ok[s], memory_order_relaxed)) continue;
      uint64_t v = atomic_load_explicit(&row[s], memory_order_relaxed);
      if (v < min) min = v;
    }
    return min == UINT64_MAX ? 0 : min;
  }
  return atomic_load_explicit(&shm->recv[c->ridx], memory_order_relaxed) / c->fan;
}

/* ST_MORE when publisher c may send one more message now, else why not */
static enum step pub_room(wk *w, client *c, int64_t now) {
  if (pending_out(c) >= HIGH_WATER) return ST_BLOCKED;
  if (cfg.q && c->inflight >= c->max_inflight) return ST_BLOCKED;
  if (cfg.window > 0 && c->fan > 0) {
    for (;;) {
      uint64_t done = messages_done(c);
      uint64_t out = c->sent - c->forgiven > done ? c->sent - c->forgiven - done : 0;
      if (out < (uint64_t)cfg.window) return ST_MORE;
      if (done != c->recv_seen) {
        c->recv_seen = done;
        c->last_prog = now;
      } else if (now - c->last_prog > WINDOW_STALL_NS) {
        /* nothing arrived for 2 s: release them (lost unless they arrive later) */
        c->forgiven += out;
        c->last_prog = now;
        w->k.window_released += out;
        continue;
      }
      return ST_WINBLOCKED;
    }
  }
  return ST_MORE;
}

/* sends what the pacing, window and inflight limits allow. Paced (-I > 0): one message
   per slot; a slot that finds the window or inflight full is skipped (and counted), as in
   bench/. Unpaced: up to BATCH messages per pass. */
static enum step pub_step(wk *w, client *c, int64_t now) {
  if (c->st != C_UP) return ST_REMOVE;
  int paced = cfg.I_ns > 0, stop = 0;
  int quota = paced ? 1 : BATCH, sent = 0;
  enum step res = ST_MORE;
  while (sent < quota) {
    res = pub_room(w, c, now);
    if (res != ST_MORE) break;
    if (cfg.L && atomic_fetch_add_explicit(&shm->limit_used, 1, memory_order_relaxed) >= cfg.L) {
      stop = 1;
      break;
    }
    /* a message stamped at or after the end of the window (crossed while batching) is
       still sent but counted by neither side */
    int64_t ts = put_publish(w, c);
    c->sent++;
    c->last_prog = now;
    w->k.sent_total++;
    if (ts >= w->t_measure && ts < w->t_drain) {
      w->k.sent_m++;
      w->k.expected_m += c->fan;
    }
    if (cfg.q) c->inflight++;
    sent++;
    if (ts >= w->t_drain) {
      stop = 1;
      break;
    }
  }
  if (sent && flush(w, c) < 0) return ST_REMOVE;
  if (stop) return ST_REMOVE;
  if (!paced) return res;
  int in_window = now >= w->t_measure && now < w->t_drain;
  if (!sent && in_window) w->k.skipped_m++;
  c->next_due += cfg.I_ns;
  if (c->next_due <= now - cfg.I_ns) { /* more than a slot behind (a stall): skip ahead */
    int64_t missed = (now - c->next_due) / cfg.I_ns;
    if (in_window) w->k.skipped_m += (uint64_t)missed;
    c->next_due += missed * cfg.I_ns;
  }
  heap_push(w, c);
  return ST_REMOVE; /* out of the ready list, into the heap */
}

static int64_t slot_quantum(void) { return cfg.I_ns < 1000000 ? cfg.I_ns : 1000000; }

static void run_publishers(wk *w, int64_t now) {
  w->any_more = w->any_win = 0;
  if (now >= w->t_drain) {
    w->nready = w->nheap = 0;
    return;
  }
  /* paced slots are served in passes at most one quantum apart (1 ms, or -I if shorter), as
     millisecond timers would: due publishers go out together, which spares a wakeup of
     the generator (and of the broker) per message */
  if (w->nheap && w->heap[0]->next_due <= now && now - w->last_slots >= slot_quantum()) {
    w->last_slots = now;
    while (w->nheap && w->heap[0]->next_due <= now) {
      client *c = heap_pop(w);
      if (c->st == C_UP) w->ready[w->nready++] = c;
    }
  }
  for (uint32_t i = 0; i < w->nready;) {
    client *c = w->ready[i];
    enum step s = pub_step(w, c, now);
    if (s == ST_REMOVE) {
      w->ready[i] = w->ready[--w->nready];
      continue;
    }
    if (s == ST_MORE) w->any_more = 1;
    if (s == ST_WINBLOCKED) w->any_win = 1;
    i++;
  }
}

/* ------------------------------------------------------------------ phases */

static void enter_phase(wk *w, int ph, int64_t now) {
  if (ph >= PH_SUBSCRIBE && w->phase < PH_SUBSCRIBE) {
    /* the connect phase is over: whatever has not finished its handshake failed */
    for (uint32_t i = 0; i < w->ncl; i++) {
      client *c = &w->cl[i];
      if (c->st == C_NEW) {
        w->k.attempted++;
        c->st = C_DEAD;
        w->k.failed++;
        w->resolved++;
        werr(w, "connect: not started before the connect phase deadline");
      } else if (c->st == C_TCP || c->st == C_MQTT) {
        fail_connect(w, c, 0, "no CONNACK before the connect phase deadline");
      }
    }
    if (ph == PH_SUBSCRIBE) {
      for (uint32_t i = 0; i < w->ncl; i++) {
        client *c = &w->cl[i];
        if (c->role == R_SUB && c->st == C_UP) send_subscribe(w, c, now);
      }
    }
  }
  if (ph >= PH_RUN && w->phase < PH_RUN) {
    for (uint32_t i = 0; i < w->ncl; i++) {
      client *c = &w->cl[i];
      if (c->sub_st == S_SENT) {
        c->sub_st = S_FAILED;
        w->k.sub_failed++;
        w->subs_pending--;
        werr(w, "subscribe: no SUBACK in time");
      }
    }
    w->t_run = atomic_load(&shm->t_run);
    for (uint32_t i = 0; i < w->ncl; i++) {
      client *c = &w->cl[i];
      if (c->role != R_PUB || c->st != C_UP) continue;
      c->fan = cfg.combined ? shm->fan[c->ridx] : 0;
      if (cfg.combined && c->fan == 0) {
        w->k.pubs_idle++;
        continue;
      }
      c->last_prog = now;
      if (cfg.I_ns > 0) {
        c->next_due = w->t_run + (int64_t)((double)cfg.I_ns * (double)c->ridx / (double)cfg.P);
        heap_push(w, c);
      } else {
        w->ready[w->nready++] = c;
      }
    }
  }
  w->phase = ph;
}

static void sweep(wk *w, int64_t now) {
  int64_t limit = (int64_t)(cfg.conn_timeout * 1e9);
  for (uint32_t i = 0; i < w->ncl; i++) {
    client *c = &w->cl[i];
    if ((c->st == C_TCP || c->st == C_MQTT) && now - c->t0 > limit) {
      fail_connect(w, c, 0, c->st == C_TCP ? "TCP connect timeout" : "no CONNACK (timeout)");
    } else if (c->st == C_UP && c->sub_st == S_SENT && now - c->t0 > limit) {
      c->sub_st = S_FAILED;
      w->k.sub_failed++;
      w->subs_pending--;
      werr(w, "subscribe: no SUBACK (timeout)");
    }
  }
}

static void keepalive(wk *w, int64_t now) {
  if (cfg.k <= 0) return;
  int64_t every = (int64_t)cfg.k * 1000000000LL / 2;
  for (uint32_t i = 0; i < w->ncl; i++) {
    client *c = &w->cl[i];
    if (c->st != C_UP || now - c->last_tx < every) continue;
    uint8_t *p = wreserve(c, 2);
    p[0] = 0xC0;
    p[1] = 0;
    c->last_tx = now;
    flush(w, c);
  }
}

static void publish_stats(wk *w) {
  struct wslot *s = w->slot;
  const struct counters *k = &w->k;
  atomic_store_explicit(&s->attempted, k->attempted, memory_order_relaxed);
  atomic_store_explicit(&s->connected, k->connected, memory_order_relaxed);
  atomic_store_explicit(&s->connected_now, k->connected - k->dropped, memory_order_relaxed);
  atomic_store_explicit(&s->refused, k->refused, memory_order_relaxed);
  atomic_store_explicit(&s->failed, k->failed, memory_order_relaxed);
  atomic_store_explicit(&s->dropped, k->dropped, memory_order_relaxed);
  atomic_store_explicit(&s->sent_total, k->sent_total, memory_order_relaxed);
  atomic_store_explicit(&s->recv_total, k->recv_total, memory_order_relaxed);
  atomic_store_explicit(&s->sent_m, k->sent_m, memory_order_relaxed);
  atomic_store_explicit(&s->recv_m, k->recv_m, memory_order_relaxed);
  atomic_store_explicit(&s->expected_m, k->expected_m, memory_order_relaxed);
  if (!w->connect_done && w->resolved == w->ncl && w->phase == PH_CONNECT) {
    w->connect_done = 1;
    atomic_store_explicit(&s->connect_done, 1, memory_order_release);
  }
  if (!w->subscribe_done && w->phase == PH_SUBSCRIBE && w->subs_pending == 0) {
    w->subscribe_done = 1;
    atomic_store_explicit(&s->subscribe_done, 1, memory_order_release);
  }
}

/* ------------------------------------------------------------------ setup */

/* emqtt-bench's topic variables: a topic level that is exactly %i or %c is replaced */
static char *render_topic(const char *tmpl, uint32_t seq, const char *id) {
  size_t cap = strlen(tmpl) + 1, o = 0;
  for (const char *p = tmpl; *p; p++)
    if (*p == '%') cap += 12 + strlen(id);
  char *out = malloc(cap);
  if (!out) exit(3);
  const char *p = tmpl;
  for (;;) {
    const char *slash = strchr(p, '/');
    size_t len = slash ? (size_t)(slash - p) : strlen(p);
    if (len == 2 && p[0] == '%' && p[1] == 'i') o += (size_t)sprintf(out + o, "%u", seq);
    else if (len == 2 && p[0] == '%' && p[1] == 'c') o += (size_t)sprintf(out + o, "%s", id);
    else {
      memcpy(out + o, p, len);
      o += len;
    }
    if (!slash) break;
    out[o++] = '/';
    p = slash + 1;
  }
  out[o] = 0;
  return out;
}

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static int worker_of(uint32_t g) {
  uint32_t r = (cfg.pairs && g >= (uint32_t)cfg.S) ? g - (uint32_t)cfg.S : g;
  return (int)(r % (uint32_t)cfg.W);
}

static void setup_clients(wk *w) {
  uint32_t n = 0;
  for (uint32_t g = 0; g < (uint32_t)cfg.N; g++)
    if (worker_of(g) == w->id) n++;
  w->cl = calloc(n ? n : 1, sizeof(client));
  w->ready = calloc(n ? n : 1, sizeof(client *));
  w->heap = calloc(n ? n : 1, sizeof(client *));
  if (!w->cl || !w->ready || !w->heap) exit(3);
  w->ncl = n;
  uint32_t j = 0;
  for (uint32_t g = 0; g < (uint32_t)cfg.N; g++) {
    if (worker_of(g) != w->id) continue;
    client *c = &w->cl[j++];
    c->fd = -1;
    c->gidx = g;
    if (cfg.scen == SC_CONN) {
      c->role = R_IDLE;
      c->ridx = g;
    } else if (g < (uint32_t)cfg.S) {
      c->role = R_SUB;
      c->ridx = g;
    } else {
      c->role = R_PUB;
      c->ridx = g - (uint32_t)cfg.S;
    }
    c->seq = (uint32_t)(cfg.n + 1 + (long)c->ridx); /* emqtt-bench: n+1 .. n+c */
    c->max_inflight = cfg.F <= 0 || cfg.F > 65535 ? 65535 : (uint32_t)cfg.F;
    const char *role = c->role == R_PUB ? "pub" : c->role == R_SUB ? "sub" : "conn";
    char id[256];
    if (cfg.shortids) {
      const char *prefix = cfg.prefix ? cfg.prefix : "";
      if (cfg.combined) /* a publisher and a subscriber share each number: keep them apart */
        snprintf(id, sizeof id, "%s%c%u", prefix, c->role == R_PUB ? 'p' : 's', c->seq);
      else
        snprintf(id, sizeof id, "%s%u", prefix, c->seq);
    } else if (cfg.prefix && cfg.prefix[0]) {
      snprintf(id, sizeof id, "%s_bench_%s_%u", cfg.prefix, role, c->seq);
    } else { /* emqtt-bench: $HOST_bench_$ROLE_$RANDOM_$N, HOST = the source address with --ifaddr */
      const char *host = cfg.nifaddrs ? cfg.ifaddr_names[c->seq % (uint32_t)cfg.nifaddrs] : cfg.hostname;
      snprintf(id, sizeof id, "%s_bench_%s_%u_%u", host, role, 1u + (uint32_t)(mix64(cfg.run_id + g) % 0xffffffffu),
               c->seq);
    }
    c->id = strdup(id);
    if (!c->id) exit(3);
    if (c->role == R_SUB) c->topic = render_topic(cfg.sub_tmpl, c->seq, c->id);
    else if (c->role == R_PUB) c->topic = render_topic(cfg.pub_tmpl, c->seq, c->id);
    if (c->topic) c->topic_len = (uint16_t)strlen(c->topic);
  }
}

/* ------------------------------------------------------------------ loop */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int64_t next_timeout(wk *w, int ph, int64_t now) {
  int64_t tmo = IDLE_TICK_NS;
  if (ph == PH_CONNECT && w->next_conn < w->ncl && w->pending < PENDING_CAP) {
    int64_t base = atomic_load_explicit(&shm->t_base, memory_order_relaxed);
    int64_t due = base + (int64_t)w->cl[w->next_conn].gidx * cfg.conn_interval_ns;
    tmo = min64(tmo, due - now);
  }
  if (ph == PH_RUN && now < w->t_drain) {
    if (w->any_more) tmo = 0;
    if (w->nheap) {
      int64_t due = w->heap[0]->next_due, next_pass = w->last_slots + slot_quantum();
      tmo = min64(tmo, (due > next_pass ? due : next_pass) - now);
    }
    if (w->any_win && cfg.W > 1) tmo = min64(tmo, 1000000);
  }
  if (cfg.use_procs) {
    if (!w->ru_m_done && w->t_measure != T_UNSET) tmo = min64(tmo, w->t_measure - now);
    if (!w->ru_d_done && w->t_drain != T_UNSET) tmo = min64(tmo, w->t_drain - now);
  }
  if (ph == PH_RUN && w->t_drain != T_UNSET && now < w->t_drain) tmo = min64(tmo, w->t_drain - now);
  return tmo < 0 ? 0 : tmo;
}

void worker_run(int id, struct partial *out) {
  wk W;
  memset(&W, 0, sizeof W);
  wk *w = &W;
  w->id = id;
  w->slot = &shm->slots[id];
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  w->scratch = malloc(SCRATCH);
  w->zeros = calloc(1, (size_t)cfg.s + 16);
  w->hist = &out->hist;
  hist_init(w->hist);
  w->chist = &out->chist;
  hist_init(w->chist);
  if (w->ep < 0 || !w->scratch || !w->zeros) {
    fprintf(stderr, "%s: worker %d: setup failed: %s\n", NBENCH_TOOL, id, strerror(errno));
    exit(3);
  }
  w->phase = PH_INIT;
  w->t_run = w->t_measure = w->t_drain = T_UNSET;
  setup_clients(w);
  struct epoll_event evs[MAX_EVENTS];

  for (;;) {
    int64_t now = mono_ns();
    int ph = atomic_load_explicit(&shm->phase, memory_order_acquire);
    if (ph == PH_DONE) break;
    if (ph != w->phase) enter_phase(w, ph, now);
    w->t_measure = atomic_load_explicit(&shm->t_measure, memory_order_relaxed);
    w->t_drain = atomic_load_explicit(&shm->t_drain, memory_order_relaxed);

    int64_t tmo = next_timeout(w, ph, now);
    struct timespec ts = {.tv_sec = tmo / 1000000000LL, .tv_nsec = tmo % 1000000000LL};
    int n = epoll_pwait2(w->ep, evs, MAX_EVENTS, &ts, NULL);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "%s: epoll_pwait2: %s\n", NBENCH_TOOL, strerror(errno));
      exit(3);
    }
    now = mono_ns();
    w->t_measure = atomic_load_explicit(&shm->t_measure, memory_order_relaxed);
    w->t_drain = atomic_load_explicit(&shm->t_drain, memory_order_relaxed);
    for (int i = 0; i < n; i++) on_event(w, evs[i].data.ptr, evs[i].events, now);

    if (ph == PH_CONNECT) {
      int64_t base = atomic_load_explicit(&shm->t_base, memory_order_relaxed);
      while (w->next_conn < w->ncl && w->pending < PENDING_CAP) {
        client *c = &w->cl[w->next_conn];
        if (cfg.conn_interval_ns > 0 && base + (int64_t)c->gidx * cfg.conn_interval_ns > now) break;
        w->next_conn++;
        start_connect(w, c, now);
      }
    } else if (ph == PH_RUN) {
      run_publishers(w, now);
    }
    if (now - w->last_sweep > 100000000LL) {
      w->last_sweep = now;
      if (ph == PH_CONNECT || ph == PH_SUBSCRIBE) sweep(w, now);
    }
    if (now - w->last_ka > 1000000000LL) {
      w->last_ka = now;
      keepalive(w, now);
    }
    if (cfg.use_procs) {
      if (!w->ru_m_done && now >= w->t_measure) {
        getrusage(RUSAGE_SELF, &w->ru_m);
        w->ru_m_done = 1;
      }
      if (!w->ru_d_done && now >= w->t_drain) {
        getrusage(RUSAGE_SELF, &w->ru_d);
        w->ru_d_done = 1;
      }
    }
    publish_stats(w);
    if (ph == PH_RUN && now >= w->t_drain && !w->sent_final) {
      w->sent_final = 1;
      atomic_store_explicit(&w->slot->sent_final, 1, memory_order_release);
    }
  }

  /* done: say goodbye and close everything */
  for (uint32_t i = 0; i < w->ncl; i++) {
    client *c = &w->cl[i];
    if (c->st == C_UP) {
      uint8_t *p = wreserve(c, 2);
      p[0] = 0xE0;
      p[1] = 0;
      send(c->fd, c->wb + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free_bufs(c);
    free(c->id);
    free(c->topic);
  }
  publish_stats(w);
  out->magic = PARTIAL_MAGIC;
  out->worker = id;
  out->k = w->k;
  out->errs = w->errs;
  if (w->ru_m_done && w->ru_d_done) {
    out->cpu_user = (double)(w->ru_d.ru_utime.tv_sec - w->ru_m.ru_utime.tv_sec) +
                    (double)(w->ru_d.ru_utime.tv_usec - w->ru_m.ru_utime.tv_usec) / 1e6;
    out->cpu_sys = (double)(w->ru_d.ru_stime.tv_sec - w->ru_m.ru_stime.tv_sec) +
                   (double)(w->ru_d.ru_stime.tv_usec - w->ru_m.ru_stime.tv_usec) / 1e6;
  }
  close(w->ep);
  free(w->cl);
  free(w->ready);
  free(w->heap);
  free(w->scratch);
  free(w->zeros);
}
