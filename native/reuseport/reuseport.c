/*
 * fleetmq reuseport addon: a listening TCP socket with SO_REUSEPORT, for Node 20
 * (node:net has `reusePort` only from Node 22.12).
 *
 *   listenReusePort(host: string, port: number, backlog: number): number   -> fd
 *   localPort(fd: number): number                                          -> bound port
 *   closeFd(fd: number): void                                              -> close(2)
 *
 * The socket is non-blocking, close-on-exec, has SO_REUSEADDR + SO_REUSEPORT, is bound and
 * listening. Each worker thread calls listenReusePort itself and adopts the fd with
 * net.Server#listen({ fd }); the kernel then hashes incoming connections over the
 * sockets of the reuseport group (evenly, unlike one shared fd). Errors are thrown as
 * Error with `code` (e.g. "EADDRINUSE"), `errno` and `syscall`, like node:net errors.
 */
#include <node_api.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static const char *errno_code(int e) {
  switch (e) {
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EACCES: return "EACCES";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case EPERM: return "EPERM";
    default: return "EUNKNOWN";
  }
}

/* Throws Error(`${syscall} ${code} ${host}:${port}`) with code/errno/syscall set. */
static void throw_errno(napi_env env, int e, const char *syscall, const char *host, int port) {
  char msg[512];
  const char *code = errno_code(e);
  if (host != NULL)
    snprintf(msg, sizeof msg, "%s %s %s:%d (%s)", syscall, code, host, port, strerror(e));
  else
    snprintf(msg, sizeof msg, "%s %s (%s)", syscall, code, strerror(e));
  napi_value jmsg, jcode, err, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_error(env, jcode, jmsg, &err);
  napi_create_int32(env, -e, &v);
  napi_set_named_property(env, err, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  napi_throw(env, err);
}

static void throw_getaddrinfo(napi_env env, int rc, const char *host) {
  char msg[512];
  const char *code = (rc == EAI_NONAME) ? "ENOTFOUND" : "EAI_FAIL";
  snprintf(msg, sizeof msg, "getaddrinfo %s %s (%s)", code, host, gai_strerror(rc));
  napi_value jmsg, jcode, err, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_error(env, jcode, jmsg, &err);
  napi_create_string_utf8(env, "getaddrinfo", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  napi_throw(env, err);
}

static napi_value listen_reuse_port(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "listenReusePort(host, port, backlog)");
    return NULL;
  }
  char host[256];
  size_t hostLen = 0;
  int32_t port = 0, backlog = 0;
  if (napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hostLen) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "host must be a string");
    return NULL;
  }
  if (napi_get_value_int32(env, argv[1], &port) != napi_ok || port < 0 || port > 65535) {
    napi_throw_range_error(env, "ERR_SOCKET_BAD_PORT", "port must be an integer 0..65535");
    return NULL;
  }
  if (napi_get_value_int32(env, argv[2], &backlog) != napi_ok || backlog < 1) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "backlog must be an integer >= 1");
    return NULL;
  }

  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char portStr[8];
  snprintf(portStr, sizeof portStr, "%d", (int)port);
  int rc = getaddrinfo(hostLen > 0 ? host : NULL, portStr, &hints, &res);
  if (rc != 0) {
    throw_getaddrinfo(env, rc, host);
    return NULL;
  }

  int fd = -1, lastErr = 0;
  const char *lastCall = "socket";
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) { lastErr = errno; lastCall = "socket"; continue; }
    int one = 1, zero = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      lastErr = errno; lastCall = "setsockopt"; close(fd); fd = -1; continue;
    }
    /* Like node:net: "::" accepts IPv4 too. */
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      lastErr = errno; lastCall = "bind"; close(fd); fd = -1; continue;
    }
    if (listen(fd, backlog) != 0) {
      lastErr = errno; lastCall = "listen"; close(fd); fd = -1; continue;
    }
    break;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    throw_errno(env, lastErr, lastCall, host, port);
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

static int get_fd(napi_env env, napi_callback_info info, int *fd) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t v = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &v) != napi_ok || v < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a non-negative integer");
    return 0;
  }
  *fd = v;
  return 1;
}

static napi_value local_port(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd(env, info, &fd)) return NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
    throw_errno(env, errno, "getsockname", NULL, 0);
    return NULL;
  }
  int port = 0;
  if (ss.ss_family == AF_INET) port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  else if (ss.ss_family == AF_INET6) port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  napi_value out;
  napi_create_int32(env, port, &out);
  return out;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd(env, info, &fd)) return NULL;
  if (close(fd) != 0) throw_errno(env, errno, "close", NULL, 0);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"listenReusePort", NULL, listen_reuse_port, NULL, NULL, NULL, napi_enumerable, NULL},
    {"localPort", NULL, local_port, NULL, NULL, NULL, napi_enumerable, NULL},
    {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

/* Context-aware (NAPI_MODULE_INIT): loadable from several worker threads. */
NAPI_MODULE_INIT() { return init(env, exports); }
