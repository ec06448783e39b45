// SPDX-License-Identifier: Apache-2.0
// mesh_native: the Linux socket operations Node cannot do on its own (DESIGN.md decision 4):
// enter a network namespace to create a socket there, set SO_MARK / IP_TRANSPARENT /
// IP_FREEBIND before bind and connect, read SO_ORIGINAL_DST, and speak ZDS (spec 2.6): Unix
// SOCK_SEQPACKET sockets carrying a netns fd as SCM_RIGHTS, with the peer's SO_PEERCRED and an
// NS_GET_NSTYPE check of what was received. Modelled on istio/ztunnel:src/socket.rs,
// src/inpod/netns.rs and src/inpod/protocol.rs.
//
// Every socket call is synchronous, non-blocking and self-contained. A call that enters a netns
// does create-configure-restore inside that one call: setns(2) is per thread, so the calling
// (main) thread is back in its own netns before any JavaScript runs again; if it cannot get back
// we abort, because continuing would run the whole process inside a pod's namespace. Readiness
// of the non-blocking Unix sockets comes from a libuv poll handle on Node's own event loop
// (pollStart): no thread, no busy polling; JavaScript is called back when the fd is readable or
// writable and then does the (non-blocking) recvmsg/sendmsg itself.
//
// Errors are thrown as JS Errors with `code` (errno name, e.g. "EPERM"), `errno` (positive C
// value) and `syscall`; argument errors are TypeErrors with code ERR_INVALID_ARG_TYPE/VALUE.
// Every file descriptor created or received here is close-on-exec.
// Built by scripts/build-native.sh (gcc + node-api-headers, no node-gyp).

#define _GNU_SOURCE
#define NAPI_VERSION 8

#ifndef __linux__
#error "mesh_native needs Linux (setns, SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST)"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>

// Values from the kernel UAPI headers, defined here so we need only libc headers (the netfilter
// headers clash with netinet/in.h). linux/netfilter_ipv4.h: SO_ORIGINAL_DST 80;
// linux/netfilter_ipv6/ip6_tables.h: IP6T_SO_ORIGINAL_DST 80; linux/in6.h: IPV6_FREEBIND 78
// (Linux 4.15); linux/nsfs.h: NS_GET_NSTYPE _IO(0xb7, 0x3) (Linux 4.11); linux/sockios.h:
// SIOCGSKNS 0x894C (Linux 4.9); linux/in.h: IP_BIND_ADDRESS_NO_PORT 24 (Linux 4.2).
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif
#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE _IO(0xb7, 0x3)
#endif
#ifndef SIOCGSKNS
#define SIOCGSKNS 0x894C
#endif

// Node's own default listen backlog (lib/net.js: backlog || 511).
#define DEFAULT_BACKLOG 511

// ---------------------------------------------------------------------------------------------
// Errors

// Result of a syscall sequence: 0 on success, else errno and the name of the failing call.
typedef struct {
  int err;
  const char *syscall;
} sys_result;

static const char *errno_name(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name != NULL) return name;
#endif
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EAGAIN: return "EAGAIN";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case EMSGSIZE: return "EMSGSIZE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOTTY: return "ENOTTY";
    default: return "EUNKNOWN";
  }
}

// An Error whose message reads "<syscall> failed: <strerror> (<NAME>)[: detail]", with `code`,
// `errno` and `syscall`; NULL (with the failure left pending) if N-API itself failed.
static napi_value errno_error(napi_env env, int err, const char *syscall, const char *detail) {
  char msg[512];
  const char *name = errno_name(err);
  if (detail != NULL && detail[0] != '\0') {
    snprintf(msg, sizeof msg, "%s failed: %s (%s): %s", syscall, strerror(err), name, detail);
  } else {
    snprintf(msg, sizeof msg, "%s failed: %s (%s)", syscall, strerror(err), name);
  }
  napi_value code, message, error, errno_value, syscall_value;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok ||
      napi_create_int32(env, err, &errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok) {
    return NULL;
  }
  return error;
}

static void throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  napi_value error = errno_error(env, err, syscall, detail);
  if (error == NULL) {
    napi_throw_error(env, errno_name(err), syscall);
    return;
  }
  napi_throw(env, error);
}

static void throw_sys(napi_env env, sys_result r, const char *detail) {
  throw_errno(env, r.err, r.syscall, detail);
}

// Turns a failed napi_* call into a JS exception unless one is already pending.
static void throw_napi_failure(napi_env env, const char *what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "mesh_native: %s failed: %s", what,
           info != NULL && info->error_message != NULL ? info->error_message : "unknown N-API error");
  napi_throw_error(env, "ERR_NAPI", msg);
}

#define NAPI_CALL(env, call)                 \
  do {                                       \
    if ((call) != napi_ok) {                 \
      throw_napi_failure((env), #call);      \
      return NULL;                           \
    }                                        \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Argument parsing. Each helper throws a TypeError and returns false on bad input.

static bool type_error(napi_env env, const char *code, const char *msg) {
  napi_throw_type_error(env, code, msg);
  return false;
}

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_napi_failure(env, "napi_get_cb_info");
    return false;
  }
  if (argc < want) {
    char msg[96];
    snprintf(msg, sizeof msg, "expected %zu argument(s), got %zu", want, argc);
    return type_error(env, "ERR_MISSING_ARGS", msg);
  }
  return true;
}

// An integral JS number in [min, max].
static bool value_to_int(napi_env env, napi_value v, const char *name, double min, double max,
                         double *out) {
  napi_valuetype t;
  char msg[160];
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    snprintf(msg, sizeof msg, "%s must be a number", name);
    return type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  }
  double d;
  napi_get_value_double(env, v, &d);
  if (!isfinite(d) || d != trunc(d) || d < min || d > max) {
    snprintf(msg, sizeof msg, "%s must be an integer in [%.0f, %.0f], got %g", name, min, max, d);
    return type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  }
  *out = d;
  return true;
}

static bool arg_fd(napi_env env, napi_value v, int *fd) {
  double d;
  if (!value_to_int(env, v, "fd", 0, INT32_MAX, &d)) return false;
  *fd = (int)d;
  return true;
}

static bool arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t size) {
  napi_valuetype t;
  char msg[160];
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    snprintf(msg, sizeof msg, "%s must be a string", name);
    return type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  }
  size_t len = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  if (len == 0 || len >= size) {
    snprintf(msg, sizeof msg, "%s must be a non-empty string shorter than %zu bytes", name, size);
    return type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  }
  napi_get_value_string_utf8(env, v, buf, size, &len);
  if (strlen(buf) != len) {
    snprintf(msg, sizeof msg, "%s must not contain NUL characters", name);
    return type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  }
  return true;
}

// Reads opts[name]; *present is false when it is missing or undefined.
static bool get_opt(napi_env env, napi_value obj, const char *name, napi_value *v, bool *present) {
  napi_valuetype t;
  if (napi_get_named_property(env, obj, name, v) != napi_ok || napi_typeof(env, *v, &t) != napi_ok) {
    throw_napi_failure(env, "reading an option");
    return false;
  }
  *present = t != napi_undefined;
  return true;
}

static bool opt_bool(napi_env env, napi_value obj, const char *name, bool dflt, bool *out) {
  napi_value v;
  bool present;
  if (!get_opt(env, obj, name, &v, &present)) return false;
  if (!present) {
    *out = dflt;
    return true;
  }
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_boolean) {
    char msg[160];
    snprintf(msg, sizeof msg, "options.%s must be a boolean", name);
    return type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  }
  napi_get_value_bool(env, v, out);
  return true;
}

static bool opt_int(napi_env env, napi_value obj, const char *name, double min, double max,
                    bool *present, double *out) {
  napi_value v;
  if (!get_opt(env, obj, name, &v, present)) return false;
  if (!*present) return true;
  char label[64];
  snprintf(label, sizeof label, "options.%s", name);
  return value_to_int(env, v, label, min, max, out);
}

static bool opt_string(napi_env env, napi_value obj, const char *name, char *buf, size_t size,
                       bool *present) {
  napi_value v;
  if (!get_opt(env, obj, name, &v, present)) return false;
  if (!*present) return true;
  char label[64];
  snprintf(label, sizeof label, "options.%s", name);
  return arg_string(env, v, label, buf, size);
}

static bool arg_object(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object) {
    return type_error(env, "ERR_INVALID_ARG_TYPE", "options must be an object");
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Addresses

typedef struct {
  struct sockaddr_storage ss;
  socklen_t len;
} sockaddr_any;

// Fills `out` from a numeric IP literal of the given family (4 or 6, or 0 = infer from text).
static bool parse_addr(napi_env env, const char *what, const char *host, int port, int *family,
                       sockaddr_any *out) {
  memset(out, 0, sizeof *out);
  int want = *family;
  if (want == 0) want = strchr(host, ':') != NULL ? 6 : 4;
  if (want == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
      sin->sin_family = AF_INET;
      sin->sin_port = htons((uint16_t)port);
      out->len = sizeof *sin;
      *family = 4;
      return true;
    }
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons((uint16_t)port);
      out->len = sizeof *sin6;
      *family = 6;
      return true;
    }
  }
  char msg[256];
  snprintf(msg, sizeof msg, "%s must be a numeric IPv%d address (no host names, no scope ids), got '%s'",
           what, want, host);
  return type_error(env, "ERR_INVALID_ARG_VALUE", msg);
}

static void wildcard_addr(int family, int port, sockaddr_any *out) {
  memset(out, 0, sizeof *out);
  if (family == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_ANY);
    sin->sin_port = htons((uint16_t)port);
    out->len = sizeof *sin;
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = in6addr_any;
    sin6->sin6_port = htons((uint16_t)port);
    out->len = sizeof *sin6;
  }
}

static void format_addr(const sockaddr_any *a, char *buf, size_t size) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (a->ss.ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    port = ntohs(sin->sin_port);
    snprintf(buf, size, "%s:%d", ip, port);
  } else {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip);
    port = ntohs(sin6->sin6_port);
    snprintf(buf, size, "[%s]:%d", ip, port);
  }
}

// ---------------------------------------------------------------------------------------------
// Socket creation inside a netns

// Creates a non-blocking, close-on-exec TCP socket, inside `netns_fd` when it is >= 0. Only the
// socket(2) call runs in the target netns: a socket belongs to the netns it was created in, and
// bind/setsockopt/listen/connect later act there whatever the calling thread's netns is.
//
// The way back is the calling thread's own netns, opened once per thread and kept: every socket a
// ztunnel creates for a pod (each inbound connection to the application) used to pay an open and
// a close of /proc/thread-self/ns/net. A thread always returns to it (or the process aborts,
// below), so the first netns a thread is seen in stays its own.
static __thread int home_netns_fd = -1;
static __thread dev_t home_netns_dev;
static __thread ino_t home_netns_ino;

// The calling thread's own netns fd, opened on first use. Checked against the namespace it was
// opened for before each use: should some code close it by mistake and the number be reused
// (say, by a pod's netns fd), it is opened afresh instead of leading setns astray. Kept at a high
// descriptor number, out of the way of the low ones that get reused first.
static int home_netns(void) {
  struct stat st;
  if (home_netns_fd >= 0 && fstat(home_netns_fd, &st) == 0 && st.st_dev == home_netns_dev &&
      st.st_ino == home_netns_ino)
    return home_netns_fd;
  int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int high = fcntl(fd, F_DUPFD_CLOEXEC, 512);
  if (high >= 0) {
    close(fd);
    fd = high;
  }
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  home_netns_dev = st.st_dev;
  home_netns_ino = st.st_ino;
  home_netns_fd = fd;
  return fd;
}

static sys_result create_tcp_socket(int netns_fd, int family, int *out_fd) {
  sys_result r = {0, NULL};
  int domain = family == 6 ? AF_INET6 : AF_INET;
  int saved = -1;
  if (netns_fd >= 0) {
    saved = home_netns();
    if (saved < 0) return (sys_result){errno, "open(/proc/thread-self/ns/net)"};
    if (setns(netns_fd, CLONE_NEWNET) != 0) return (sys_result){errno, "setns"};
  }
  int fd = socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) r = (sys_result){errno, "socket"};
  if (saved >= 0) {
    if (setns(saved, CLONE_NEWNET) != 0) {
      // The thread is stuck in the pod's namespace. Returning would run JavaScript (and create
      // every later socket) there, so stop the process, as ztunnel does (src/inpod/netns.rs).
      fprintf(stderr, "mesh_native: FATAL: cannot return to the original network namespace: %s\n",
              strerror(errno));
      abort();
    }
  }
  *out_fd = fd;
  return r;
}

static int set_int_opt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

typedef struct {
  int netns_fd;  // -1: current netns
  int family;    // 4 or 6
  bool transparent;
  bool freebind;
  bool has_mark;
  uint32_t mark;
  bool reuse_addr;
  bool reuse_port;
  bool has_v6only;
  bool v6only;
} socket_opts;

// Options that must be in place before bind/connect, in ztunnel's order (src/socket.rs).
static sys_result configure_socket(int fd, const socket_opts *o) {
  if (o->reuse_addr && set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0)
    return (sys_result){errno, "setsockopt(SO_REUSEADDR)"};
  if (o->reuse_port && set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1) != 0)
    return (sys_result){errno, "setsockopt(SO_REUSEPORT)"};
  if (o->family == 6 && o->has_v6only && set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, o->v6only ? 1 : 0) != 0)
    return (sys_result){errno, "setsockopt(IPV6_V6ONLY)"};
  if (o->transparent) {
    int rc = o->family == 6 ? set_int_opt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
                            : set_int_opt(fd, IPPROTO_IP, IP_TRANSPARENT, 1);
    if (rc != 0) return (sys_result){errno, o->family == 6 ? "setsockopt(IPV6_TRANSPARENT)" : "setsockopt(IP_TRANSPARENT)"};
  }
  if (o->freebind) {
    int rc = o->family == 6 ? set_int_opt(fd, IPPROTO_IPV6, IPV6_FREEBIND, 1)
                            : set_int_opt(fd, IPPROTO_IP, IP_FREEBIND, 1);
    if (rc != 0) return (sys_result){errno, o->family == 6 ? "setsockopt(IPV6_FREEBIND)" : "setsockopt(IP_FREEBIND)"};
  }
  if (o->has_mark) {
    // SO_MARK takes an unsigned 32-bit value (socket(7)).
    uint32_t mark = o->mark;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
      return (sys_result){errno, "setsockopt(SO_MARK)"};
  }
  return (sys_result){0, NULL};
}

// Parses the options shared by listenTcp and socketForConnect.
static bool parse_socket_opts(napi_env env, napi_value obj, socket_opts *o) {
  bool present;
  double d;
  o->netns_fd = -1;
  if (!opt_int(env, obj, "netnsFd", 0, INT32_MAX, &present, &d)) return false;
  if (present) o->netns_fd = (int)d;
  if (!opt_int(env, obj, "family", 4, 6, &present, &d)) return false;
  if (present && d != 4 && d != 6) return type_error(env, "ERR_INVALID_ARG_VALUE", "options.family must be 4 or 6");
  o->family = present ? (int)d : 0;
  if (!opt_bool(env, obj, "transparent", false, &o->transparent)) return false;
  if (!opt_bool(env, obj, "freebind", false, &o->freebind)) return false;
  if (!opt_int(env, obj, "mark", 0, 4294967295.0, &o->has_mark, &d)) return false;
  o->mark = o->has_mark ? (uint32_t)d : 0;
  return true;
}

static napi_value fd_result(napi_env env, int fd) {
  napi_value out;
  if (napi_create_int32(env, fd, &out) != napi_ok) {
    close(fd);
    throw_napi_failure(env, "napi_create_int32");
    return NULL;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Exported functions

// openNetns(path): O_RDONLY|O_CLOEXEC fd of a network namespace file.
static napi_value OpenNetns(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[4096];
  if (!get_args(env, info, 1, argv) || !arg_string(env, argv[0], "path", path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open", path);
    return NULL;
  }
  // Refuse anything that is not a network namespace now rather than at the first setns.
  int type = ioctl(fd, NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    // ENOTTY: not an nsfs file at all; another type: a namespace, but not a network one.
    int err = type < 0 && errno != ENOTTY ? errno : EINVAL;
    close(fd);
    char detail[4200];
    snprintf(detail, sizeof detail, "%s is not a network namespace file", path);
    throw_errno(env, err, "ioctl(NS_GET_NSTYPE)", detail);
    return NULL;
  }
  return fd_result(env, fd);
}

// currentNetns(): fd of the calling thread's own network namespace.
static napi_value CurrentNetns(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open", "/proc/thread-self/ns/net");
    return NULL;
  }
  return fd_result(env, fd);
}

static napi_value CloseFd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) throw_errno(env, errno, "close", NULL);
  return NULL;
}

// dupFd(fd): a close-on-exec duplicate (F_DUPFD_CLOEXEC) referring to the same open file, so a
// holder can keep using it after the original is closed and its number reused.
static napi_value DupFd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    throw_errno(env, errno, "fcntl(F_DUPFD_CLOEXEC)", NULL);
    return NULL;
  }
  return fd_result(env, dup);
}

static napi_value inode_result(napi_env env, int fd, const char *syscall) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    throw_errno(env, errno, syscall, NULL);
    return NULL;
  }
  napi_value out;
  // Namespace inode numbers are 32-bit (proc_alloc_inum), exact in a double.
  NAPI_CALL(env, napi_create_double(env, (double)st.st_ino, &out));
  return out;
}

// netnsInode(fd): inode of a netns fd; two fds name the same namespace iff the inodes match.
static napi_value NetnsInode(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  return inode_result(env, fd, "fstat");
}

// socketNetnsInode(fd): inode of the netns a socket belongs to (ioctl SIOCGSKNS).
static napi_value SocketNetnsInode(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  int ns = ioctl(fd, SIOCGSKNS);
  if (ns < 0) {
    throw_errno(env, errno, "ioctl(SIOCGSKNS)", NULL);
    return NULL;
  }
  napi_value out = inode_result(env, ns, "fstat");
  close(ns);
  return out;
}

// listenTcp(opts) -> listening fd.
static napi_value ListenTcp(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv) || !arg_object(env, argv[0])) return NULL;
  socket_opts o;
  memset(&o, 0, sizeof o);
  if (!parse_socket_opts(env, argv[0], &o)) return NULL;
  char host[INET6_ADDRSTRLEN + 1];
  bool present;
  double d;
  if (!opt_string(env, argv[0], "host", host, sizeof host, &present)) return NULL;
  if (!present) {
    type_error(env, "ERR_INVALID_ARG_TYPE", "options.host must be a string");
    return NULL;
  }
  if (!opt_int(env, argv[0], "port", 0, 65535, &present, &d)) return NULL;
  if (!present) {
    type_error(env, "ERR_INVALID_ARG_TYPE", "options.port must be a number");
    return NULL;
  }
  int port = (int)d;
  // libuv sets SO_REUSEADDR on every TCP bind (src/unix/tcp.c); keep that default.
  if (!opt_bool(env, argv[0], "reuseAddr", true, &o.reuse_addr)) return NULL;
  if (!opt_bool(env, argv[0], "reusePort", false, &o.reuse_port)) return NULL;
  if (!opt_bool(env, argv[0], "v6only", false, &o.v6only)) return NULL;
  o.has_v6only = true;
  if (!opt_int(env, argv[0], "backlog", 1, INT32_MAX, &present, &d)) return NULL;
  int backlog = present ? (int)d : DEFAULT_BACKLOG;
  sockaddr_any addr;
  if (!parse_addr(env, "options.host", host, port, &o.family, &addr)) return NULL;

  int fd = -1;
  sys_result r = create_tcp_socket(o.netns_fd, o.family, &fd);
  if (r.err == 0) r = configure_socket(fd, &o);
  if (r.err == 0 && bind(fd, (struct sockaddr *)&addr.ss, addr.len) != 0) r = (sys_result){errno, "bind"};
  if (r.err == 0 && listen(fd, backlog) != 0) r = (sys_result){errno, "listen"};
  if (r.err != 0) {
    if (fd >= 0) close(fd);
    char where[80];
    format_addr(&addr, where, sizeof where);
    throw_sys(env, r, where);
    return NULL;
  }
  return fd_result(env, fd);
}

// socketForConnect(opts) -> unconnected (optionally bound) fd for new net.Socket({fd}).connect().
static napi_value SocketForConnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv) || !arg_object(env, argv[0])) return NULL;
  socket_opts o;
  memset(&o, 0, sizeof o);
  if (!parse_socket_opts(env, argv[0], &o)) return NULL;
  char host[INET6_ADDRSTRLEN + 1];
  bool has_host, has_port;
  double d = 0;
  if (!opt_string(env, argv[0], "bindHost", host, sizeof host, &has_host)) return NULL;
  if (!opt_int(env, argv[0], "bindPort", 0, 65535, &has_port, &d)) return NULL;
  int port = has_port ? (int)d : 0;
  if (o.family == 0) {
    if (!has_host) {
    type_error(env, "ERR_INVALID_ARG_TYPE", "options.family must be 4 or 6");
    return NULL;
  }
  }
  sockaddr_any addr;
  if (has_host) {
    if (!parse_addr(env, "options.bindHost", host, port, &o.family, &addr)) return NULL;
  } else {
    wildcard_addr(o.family, port, &addr);
  }

  int fd = -1;
  sys_result r = create_tcp_socket(o.netns_fd, o.family, &fd);
  if (r.err == 0) r = configure_socket(fd, &o);
  if (r.err == 0 && has_host && port == 0) {
    // Let connect() pick the source port against the full 4-tuple instead of reserving one per
    // source address at bind time: many connections may share one spoofed source (ip(7)).
    if (set_int_opt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1) != 0)
      r = (sys_result){errno, "setsockopt(IP_BIND_ADDRESS_NO_PORT)"};
  }
  if (r.err == 0 && (has_host || has_port) && bind(fd, (struct sockaddr *)&addr.ss, addr.len) != 0)
    r = (sys_result){errno, "bind"};
  if (r.err != 0) {
    if (fd >= 0) close(fd);
    char where[80] = "";
    if (has_host || has_port) format_addr(&addr, where, sizeof where);
    throw_sys(env, r, where);
    return NULL;
  }
  return fd_result(env, fd);
}

// originalDst(fd) -> { address, port, family } from conntrack (SO_ORIGINAL_DST /
// IP6T_SO_ORIGINAL_DST), as istio/ztunnel:src/socket.rs orig_dst_addr.
static napi_value OriginalDst(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  sockaddr_any local;
  local.len = sizeof local.ss;
  if (getsockname(fd, (struct sockaddr *)&local.ss, &local.len) != 0) {
    throw_errno(env, errno, "getsockname", NULL);
    return NULL;
  }
  char ip[INET6_ADDRSTRLEN];
  int port, family;
  bool v4 = local.ss.ss_family == AF_INET;
  if (local.ss.ss_family == AF_INET6 &&
      IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local.ss)->sin6_addr)) {
    // An IPv4 connection accepted on a dual-stack socket is tracked as IPv4.
    v4 = true;
  } else if (local.ss.ss_family != AF_INET && local.ss.ss_family != AF_INET6) {
    throw_errno(env, EAFNOSUPPORT, "getsockname", "not an IPv4/IPv6 socket");
    return NULL;
  }
  if (v4) {
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    memset(&sin, 0, sizeof sin);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sin, &len) != 0) {
      throw_errno(env, errno, "getsockopt(SO_ORIGINAL_DST)", NULL);
      return NULL;
    }
    inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof ip);
    port = ntohs(sin.sin_port);
    family = 4;
  } else {
    struct sockaddr_in6 sin6;
    socklen_t len = sizeof sin6;
    memset(&sin6, 0, sizeof sin6);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sin6, &len) != 0) {
      throw_errno(env, errno, "getsockopt(IP6T_SO_ORIGINAL_DST)", NULL);
      return NULL;
    }
    inet_ntop(AF_INET6, &sin6.sin6_addr, ip, sizeof ip);
    port = ntohs(sin6.sin6_port);
    family = 6;
  }
  napi_value out, address, port_value, family_value;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_string_utf8(env, ip, NAPI_AUTO_LENGTH, &address));
  NAPI_CALL(env, napi_create_int32(env, port, &port_value));
  NAPI_CALL(env, napi_create_int32(env, family, &family_value));
  NAPI_CALL(env, napi_set_named_property(env, out, "address", address));
  NAPI_CALL(env, napi_set_named_property(env, out, "port", port_value));
  NAPI_CALL(env, napi_set_named_property(env, out, "family", family_value));
  return out;
}

static napi_value SetMark(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  double d;
  if (!get_args(env, info, 2, argv) || !arg_fd(env, argv[0], &fd) ||
      !value_to_int(env, argv[1], "mark", 0, 4294967295.0, &d))
    return NULL;
  uint32_t mark = (uint32_t)d;
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
    throw_errno(env, errno, "setsockopt(SO_MARK)", NULL);
  return NULL;
}

static napi_value GetMark(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  uint32_t mark = 0;
  socklen_t len = sizeof mark;
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) != 0) {
    throw_errno(env, errno, "getsockopt(SO_MARK)", NULL);
    return NULL;
  }
  napi_value out;
  NAPI_CALL(env, napi_create_uint32(env, mark, &out));
  return out;
}

static napi_value SetTransparent(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (!get_args(env, info, 2, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_boolean) {
    type_error(env, "ERR_INVALID_ARG_TYPE", "on must be a boolean");
    return NULL;
  }
  bool on;
  NAPI_CALL(env, napi_get_value_bool(env, argv[1], &on));
  int domain = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    throw_errno(env, errno, "getsockopt(SO_DOMAIN)", NULL);
    return NULL;
  }
  bool v6 = domain == AF_INET6;
  if (set_int_opt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, on ? 1 : 0) != 0)
    throw_errno(env, errno, v6 ? "setsockopt(IPV6_TRANSPARENT)" : "setsockopt(IP_TRANSPARENT)", NULL);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// Namespaces

// namespaceType(fd) -> "net", "mnt", ... for an nsfs fd (ioctl NS_GET_NSTYPE, Linux 4.11), or
// null when the fd is open but not a namespace. ZDS uses it to refuse a "netns" fd that is
// anything else (spec 2.6), as istio/ztunnel:src/inpod/protocol.rs does.
static napi_value NamespaceType(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  int type = ioctl(fd, NS_GET_NSTYPE);
  napi_value out;
  if (type < 0) {
    if (errno == EBADF) {
      throw_errno(env, errno, "ioctl(NS_GET_NSTYPE)", NULL);
      return NULL;
    }
    // ENOTTY (a file, a socket, a device) or EINVAL: open, but not an nsfs file.
    NAPI_CALL(env, napi_get_null(env, &out));
    return out;
  }
  const char *name;
  switch (type) {
    case CLONE_NEWNET: name = "net"; break;
    case CLONE_NEWNS: name = "mnt"; break;
    case CLONE_NEWPID: name = "pid"; break;
    case CLONE_NEWUSER: name = "user"; break;
    case CLONE_NEWUTS: name = "uts"; break;
    case CLONE_NEWIPC: name = "ipc"; break;
    case CLONE_NEWCGROUP: name = "cgroup"; break;
    default: name = "unknown"; break;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &out));
  return out;
}

// writeNetSysctl(netnsFd, key, value): writes /proc/sys/net/<key> of the network namespace
// `netnsFd`. /proc/sys/net resolves to the netns of the task that opens it, so the open happens
// inside the namespace (create-configure-restore, as for sockets); the write lands in the netns
// the file was opened in. `key` is relative to /proc/sys/net ("ipv4/tcp_migrate_req").
static napi_value WriteNetSysctl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int netns_fd;
  char key[128], value[64];
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &netns_fd) ||
      !arg_string(env, argv[1], "key", key, sizeof key) ||
      !arg_string(env, argv[2], "value", value, sizeof value))
    return NULL;
  for (const char *c = key; *c != '\0'; c++) {
    bool ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '/';
    if (!ok || (c == key && *c == '/') || (*c == '/' && c[1] == '/')) {
      type_error(env, "ERR_INVALID_ARG_VALUE",
                 "key must be a path under /proc/sys/net such as ipv4/tcp_migrate_req");
      return NULL;
    }
  }
  char path[192];
  snprintf(path, sizeof path, "/proc/sys/net/%s", key);
  int saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (saved < 0) {
    throw_errno(env, errno, "open", "/proc/thread-self/ns/net");
    return NULL;
  }
  if (setns(netns_fd, CLONE_NEWNET) != 0) {
    int err = errno;
    close(saved);
    throw_errno(env, err, "setns", NULL);
    return NULL;
  }
  sys_result r = {0, NULL};
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) r = (sys_result){errno, "open"};
  if (setns(saved, CLONE_NEWNET) != 0) {
    fprintf(stderr, "mesh_native: FATAL: cannot return to the original network namespace: %s\n",
            strerror(errno));
    abort();
  }
  close(saved);
  if (r.err == 0) {
    size_t len = strlen(value);
    ssize_t n = write(fd, value, len);
    if (n < 0) r = (sys_result){errno, "write"};
    else if ((size_t)n != len) r = (sys_result){EIO, "write"};
    close(fd);
  }
  if (r.err != 0) {
    throw_sys(env, r, path);
    return NULL;
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// Unix SOCK_SEQPACKET sockets (ZDS transport, spec 2.6). All non-blocking and close-on-exec; a
// call that would block reports it (null / false) instead, and readiness comes from pollStart.

#define MAX_DATAGRAM 65536
#define MAX_RECV_FDS 16

// Fills a sockaddr_un; false (TypeError thrown) when the path does not fit sun_path.
static bool unix_addr(napi_env env, const char *path, struct sockaddr_un *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr->sun_path) {
    char msg[160];
    snprintf(msg, sizeof msg, "path must be shorter than %zu bytes (sun_path), got %zu",
             sizeof addr->sun_path, strlen(path));
    return type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  }
  memcpy(addr->sun_path, path, strlen(path) + 1);
  return true;
}

// seqpacketListen(path, mode, backlog) -> listening fd. The socket file gets `mode` (e.g. 0600:
// the UDS is a privilege boundary) before listen(), so nobody can connect while it is wider.
static napi_value SeqpacketListen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[4096];
  double mode, backlog;
  if (!get_args(env, info, 3, argv) || !arg_string(env, argv[0], "path", path, sizeof path) ||
      !value_to_int(env, argv[1], "mode", 0, 0777, &mode) ||
      !value_to_int(env, argv[2], "backlog", 1, 4096, &backlog))
    return NULL;
  struct sockaddr_un addr;
  if (!unix_addr(env, path, &addr)) return NULL;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    return NULL;
  }
  sys_result r = {0, NULL};
  bool bound = false;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) r = (sys_result){errno, "bind(AF_UNIX)"};
  else bound = true;
  // chmod(2) on the path: fchmod on a socket fd would change the socket inode, not the file.
  if (r.err == 0 && chmod(path, (mode_t)mode) != 0) r = (sys_result){errno, "chmod"};
  if (r.err == 0 && listen(fd, (int)backlog) != 0) r = (sys_result){errno, "listen"};
  if (r.err != 0) {
    if (bound) unlink(path);
    close(fd);
    throw_sys(env, r, path);
    return NULL;
  }
  return fd_result(env, fd);
}

// seqpacketConnect(path) -> connected fd. A Unix connect completes at once or fails (EAGAIN
// when the listener's backlog is full, ECONNREFUSED when nobody listens, ENOENT).
static napi_value SeqpacketConnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[4096];
  if (!get_args(env, info, 1, argv) || !arg_string(env, argv[0], "path", path, sizeof path)) return NULL;
  struct sockaddr_un addr;
  if (!unix_addr(env, path, &addr)) return NULL;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    return NULL;
  }
  int rc;
  do {
    rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "connect(AF_UNIX)", path);
    return NULL;
  }
  return fd_result(env, fd);
}

// Sets { pid, uid, gid } of the peer (SO_PEERCRED: the credentials at connect/listen time).
static bool set_peer_credentials(napi_env env, int fd, napi_value obj) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw_errno(env, errno, "getsockopt(SO_PEERCRED)", NULL);
    return false;
  }
  napi_value pid, uid, gid;
  if (napi_create_int32(env, cred.pid, &pid) != napi_ok ||
      napi_create_uint32(env, cred.uid, &uid) != napi_ok ||
      napi_create_uint32(env, cred.gid, &gid) != napi_ok ||
      napi_set_named_property(env, obj, "pid", pid) != napi_ok ||
      napi_set_named_property(env, obj, "uid", uid) != napi_ok ||
      napi_set_named_property(env, obj, "gid", gid) != napi_ok) {
    throw_napi_failure(env, "building the peer credentials");
    return false;
  }
  return true;
}

// peerCredentials(fd) -> { pid, uid, gid } of a connected Unix socket's peer.
static napi_value PeerCredentials(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd)) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  return set_peer_credentials(env, fd, out) ? out : NULL;
}

// seqpacketAccept(listenFd) -> { fd, pid, uid, gid } of the next connection, or null when none
// is queued.
static napi_value SeqpacketAccept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int lfd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &lfd)) return NULL;
  int fd;
  for (;;) {
    fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) break;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    napi_value none;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      NAPI_CALL(env, napi_get_null(env, &none));
      return none;
    }
    throw_errno(env, errno, "accept4", NULL);
    return NULL;
  }
  napi_value out, fd_value;
  if (napi_create_object(env, &out) != napi_ok || napi_create_int32(env, fd, &fd_value) != napi_ok ||
      napi_set_named_property(env, out, "fd", fd_value) != napi_ok) {
    close(fd);
    throw_napi_failure(env, "building the accepted connection");
    return NULL;
  }
  if (!set_peer_credentials(env, fd, out)) {
    close(fd);
    return NULL;
  }
  return out;
}

// seqpacketSend(fd, data, passFd) -> true when the datagram went out whole, false when the
// socket buffer is full (wait for writability). passFd >= 0 travels as SCM_RIGHTS; -1: none.
static napi_value SeqpacketSend(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  double pass_d;
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &fd) ||
      !value_to_int(env, argv[2], "passFd", -1, INT32_MAX, &pass_d))
    return NULL;
  bool is_typed = false;
  NAPI_CALL(env, napi_is_typedarray(env, argv[1], &is_typed));
  napi_typedarray_type ttype;
  size_t length = 0;
  void *data = NULL;
  if (is_typed) NAPI_CALL(env, napi_get_typedarray_info(env, argv[1], &ttype, &length, &data, NULL, NULL));
  if (!is_typed || ttype != napi_uint8_array) {
    type_error(env, "ERR_INVALID_ARG_TYPE", "data must be a Uint8Array or Buffer");
    return NULL;
  }
  if (length > MAX_DATAGRAM) {
    type_error(env, "ERR_INVALID_ARG_VALUE", "data must be at most 65536 bytes");
    return NULL;
  }
  int pass_fd = (int)pass_d;
  struct iovec iov = {.iov_base = length > 0 ? data : (void *)"", .iov_len = length};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (pass_fd >= 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  napi_value out;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      NAPI_CALL(env, napi_get_boolean(env, false, &out));
      return out;
    }
    throw_errno(env, errno, "sendmsg", NULL);
    return NULL;
  }
  if ((size_t)n != length) {
    // A SOCK_SEQPACKET datagram is atomic; a short send would mean a different socket type.
    throw_errno(env, EMSGSIZE, "sendmsg", "short send: not a SOCK_SEQPACKET socket");
    return NULL;
  }
  NAPI_CALL(env, napi_get_boolean(env, true, &out));
  return out;
}

static void close_all(const int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

// seqpacketRecv(fd, maxBytes, maxFds) -> { data, fds, eof } for one datagram, or null when none
// is queued. A datagram longer than maxBytes (MSG_TRUNC) or with more than maxFds descriptors
// (MSG_CTRUNC) is an EMSGSIZE error, after closing whatever descriptors did arrive. eof: the
// peer closed (a read of 0 bytes and no descriptors).
static napi_value SeqpacketRecv(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  double max_bytes_d, max_fds_d;
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &fd) ||
      !value_to_int(env, argv[1], "maxBytes", 1, MAX_DATAGRAM, &max_bytes_d) ||
      !value_to_int(env, argv[2], "maxFds", 0, MAX_RECV_FDS, &max_fds_d))
    return NULL;
  size_t max_bytes = (size_t)max_bytes_d;
  int max_fds = (int)max_fds_d;
  unsigned char *buf = malloc(max_bytes);
  if (buf == NULL) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  union {
    char buf[CMSG_SPACE(MAX_RECV_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = buf, .iov_len = max_bytes};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = max_fds > 0 ? control.buf : NULL;
  msg.msg_controllen = max_fds > 0 ? CMSG_SPACE(max_fds * sizeof(int)) : 0;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  napi_value out;
  if (n < 0) {
    int err = errno;
    free(buf);
    if (err == EAGAIN || err == EWOULDBLOCK) {
      NAPI_CALL(env, napi_get_null(env, &out));
      return out;
    }
    throw_errno(env, err, "recvmsg", NULL);
    return NULL;
  }
  int fds[MAX_RECV_FDS];
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < count; i++) {
      int got;
      memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (nfds < MAX_RECV_FDS) fds[nfds++] = got;
      else close(got);
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    close_all(fds, nfds);
    free(buf);
    char detail[160];
    if (msg.msg_flags & MSG_TRUNC) {
      snprintf(detail, sizeof detail, "datagram larger than %zu bytes (MSG_TRUNC)", max_bytes);
    } else {
      snprintf(detail, sizeof detail, "more than %d file descriptor(s) attached (MSG_CTRUNC)", max_fds);
    }
    throw_errno(env, EMSGSIZE, "recvmsg", detail);
    return NULL;
  }
  napi_value data, fd_array, eof;
  napi_status s = napi_create_buffer_copy(env, (size_t)n, buf, NULL, &data);
  free(buf);
  if (s == napi_ok) s = napi_create_array_with_length(env, (size_t)nfds, &fd_array);
  for (int i = 0; s == napi_ok && i < nfds; i++) {
    napi_value v;
    s = napi_create_int32(env, fds[i], &v);
    if (s == napi_ok) s = napi_set_element(env, fd_array, (uint32_t)i, v);
  }
  if (s == napi_ok) s = napi_get_boolean(env, n == 0 && nfds == 0, &eof);
  if (s == napi_ok) s = napi_create_object(env, &out);
  if (s == napi_ok) s = napi_set_named_property(env, out, "data", data);
  if (s == napi_ok) s = napi_set_named_property(env, out, "fds", fd_array);
  if (s == napi_ok) s = napi_set_named_property(env, out, "eof", eof);
  if (s != napi_ok) {
    close_all(fds, nfds);
    throw_napi_failure(env, "building the received datagram");
    return NULL;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Readiness: libuv poll handles on Node's event loop
//
// Node runs on libuv and exports its symbols to addons (napi_get_uv_event_loop hands out the
// loop), but node-api-headers ships no uv.h. We declare the few libuv 1.x functions used here;
// libuv keeps its ABI stable within major version 1 (the handle data accessors exist since
// 1.19). The poll handle stays opaque: its size comes from uv_handle_size(), and module init
// checks that the libuv we run on is >= 1.19 and names handle type 8 "poll", so a mismatch fails
// at load time instead of corrupting memory.

#pragma GCC visibility push(default)
typedef struct uv_handle_s uv_handle_t;
typedef struct uv_poll_s uv_poll_t;
typedef void (*uv_poll_cb)(uv_poll_t *handle, int status, int events);
typedef void (*uv_close_cb)(uv_handle_t *handle);
extern unsigned int uv_version(void);
extern const char *uv_handle_type_name(int type);
extern size_t uv_handle_size(int type);
extern int uv_poll_init(struct uv_loop_s *loop, uv_poll_t *handle, int fd);
extern int uv_poll_start(uv_poll_t *handle, int events, uv_poll_cb cb);
extern int uv_poll_stop(uv_poll_t *handle);
extern void uv_close(uv_handle_t *handle, uv_close_cb close_cb);
extern void uv_handle_set_data(uv_handle_t *handle, void *data);
extern void *uv_handle_get_data(const uv_handle_t *handle);
#pragma GCC visibility pop

#define MESH_UV_POLL 8      // uv_handle_type UV_POLL
#define MESH_UV_READABLE 1  // enum uv_poll_event
#define MESH_UV_WRITABLE 2
#define MESH_UV_MIN_VERSION 0x011300  // 1.19.0

static bool uv_compatible(void) {
  const char *name = uv_handle_type_name(MESH_UV_POLL);
  return uv_version() >= MESH_UV_MIN_VERSION && name != NULL && strcmp(name, "poll") == 0;
}

typedef struct {
  napi_env env;
  uv_poll_t *handle;  // NULL once closed; freed by libuv's close callback
  napi_ref callback;
  napi_async_context async;
} poll_watcher;

static void poll_env_cleanup(void *arg);

static void poll_handle_free(uv_handle_t *h) {
  free(h);
}

// Stops and closes the handle and drops the callback. `from_env_cleanup`: the environment is
// going away and its cleanup hook is the caller, so leave N-API alone.
static void poll_watcher_close(poll_watcher *w, bool from_env_cleanup) {
  if (w->handle == NULL) return;
  uv_poll_stop(w->handle);
  uv_close((uv_handle_t *)w->handle, poll_handle_free);
  w->handle = NULL;
  if (!from_env_cleanup) {
    napi_remove_env_cleanup_hook(w->env, poll_env_cleanup, w);
    napi_delete_reference(w->env, w->callback);
    napi_async_destroy(w->env, w->async);
  }
}

static void poll_env_cleanup(void *arg) {
  poll_watcher_close(arg, true);
}

// The External's finalizer: the JS side can no longer reach the watcher.
static void poll_watcher_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  poll_watcher *w = data;
  poll_watcher_close(w, false);
  free(w);
}

// Calls callback(err | null, events) on the JS thread, with Node's callback scope (microtasks
// and nextTicks run afterwards; a throw becomes an uncaught exception).
static void on_poll(uv_poll_t *h, int status, int events) {
  poll_watcher *w = uv_handle_get_data((uv_handle_t *)h);
  if (w == NULL || w->handle == NULL) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, argv[2], result;
  bool ok = napi_get_reference_value(env, w->callback, &fn) == napi_ok && fn != NULL &&
            napi_get_global(env, &recv) == napi_ok && napi_create_int32(env, events, &argv[1]) == napi_ok;
  if (ok && status < 0) {
    // libuv errors are negated errno values on Unix.
    argv[0] = errno_error(env, -status, "uv_poll", NULL);
    ok = argv[0] != NULL;
  } else if (ok) {
    ok = napi_get_null(env, &argv[0]) == napi_ok;
  }
  if (ok && napi_make_callback(env, w->async, recv, fn, 2, argv, &result) == napi_pending_exception) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

static bool arg_poll_events(napi_env env, napi_value v, int *events) {
  double d;
  if (!value_to_int(env, v, "events", 0, MESH_UV_READABLE | MESH_UV_WRITABLE, &d)) return false;
  *events = (int)d;
  return true;
}

static bool arg_watcher(napi_env env, napi_value v, poll_watcher **out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) {
    return type_error(env, "ERR_INVALID_ARG_TYPE", "watcher must be a handle returned by pollStart");
  }
  void *data;
  if (napi_get_value_external(env, v, &data) != napi_ok) {
    throw_napi_failure(env, "napi_get_value_external");
    return false;
  }
  *out = data;
  return true;
}

// Applies `events` (0 stops watching until the next update).
static int poll_watcher_set(poll_watcher *w, int events) {
  return events == 0 ? uv_poll_stop(w->handle) : uv_poll_start(w->handle, events, on_poll);
}

// pollStart(fd, events, callback) -> watcher. events: 1 readable, 2 writable (0: none yet).
// Stop it with pollClose before closing the fd.
static napi_value PollStart(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd, events;
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &fd) || !arg_poll_events(env, argv[1], &events))
    return NULL;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[2], &t));
  if (t != napi_function) {
    type_error(env, "ERR_INVALID_ARG_TYPE", "callback must be a function");
    return NULL;
  }
  if (!uv_compatible()) {
    napi_throw_error(env, "ERR_NATIVE_LIBUV",
                     "mesh_native: this Node's libuv is older than 1.19 or its handle types differ; "
                     "fd polling is unavailable");
    return NULL;
  }
  struct uv_loop_s *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  poll_watcher *w = calloc(1, sizeof *w);
  uv_poll_t *h = malloc(uv_handle_size(MESH_UV_POLL));
  if (w == NULL || h == NULL) {
    free(w);
    free(h);
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  int rc = uv_poll_init(loop, h, fd);
  if (rc != 0) {
    // An uninitialised handle needs no uv_close.
    free(w);
    free(h);
    throw_errno(env, -rc, "uv_poll_init", NULL);
    return NULL;
  }
  uv_handle_set_data((uv_handle_t *)h, w);
  w->env = env;
  w->handle = h;
  napi_value name, external;
  if (napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok ||
      napi_create_string_utf8(env, "mesh_native.poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &w->async) != napi_ok) {
    uv_close((uv_handle_t *)h, poll_handle_free);
    if (w->callback != NULL) napi_delete_reference(env, w->callback);
    free(w);
    throw_napi_failure(env, "creating the poll watcher");
    return NULL;
  }
  if (napi_create_external(env, w, poll_watcher_finalize, NULL, &external) != napi_ok) {
    uv_close((uv_handle_t *)h, poll_handle_free);
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->async);
    free(w);
    throw_napi_failure(env, "napi_create_external");
    return NULL;
  }
  // From here the finalizer owns `w`.
  if (napi_add_env_cleanup_hook(env, poll_env_cleanup, w) != napi_ok) {
    poll_watcher_close(w, true);
    throw_napi_failure(env, "napi_add_env_cleanup_hook");
    return NULL;
  }
  rc = poll_watcher_set(w, events);
  if (rc != 0) {
    poll_watcher_close(w, false);
    throw_errno(env, -rc, "uv_poll_start", NULL);
    return NULL;
  }
  return external;
}

// pollUpdate(watcher, events): what to wait for from now on (0: nothing for now).
static napi_value PollUpdate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  poll_watcher *w;
  int events;
  if (!get_args(env, info, 2, argv) || !arg_watcher(env, argv[0], &w) || !arg_poll_events(env, argv[1], &events))
    return NULL;
  if (w->handle == NULL) {
    napi_throw_error(env, "ERR_NATIVE_POLL_CLOSED", "pollUpdate on a closed watcher");
    return NULL;
  }
  int rc = poll_watcher_set(w, events);
  if (rc != 0) throw_errno(env, -rc, "uv_poll_start", NULL);
  return NULL;
}

// pollClose(watcher): stops watching for good; idempotent. Call before closing the fd.
static napi_value PollClose(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  poll_watcher *w;
  if (!get_args(env, info, 1, argv) || !arg_watcher(env, argv[0], &w)) return NULL;
  poll_watcher_close(w, false);
  return NULL;
}

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"openNetns", OpenNetns},
      {"currentNetns", CurrentNetns},
      {"closeFd", CloseFd},
      {"dupFd", DupFd},
      {"netnsInode", NetnsInode},
      {"socketNetnsInode", SocketNetnsInode},
      {"listenTcp", ListenTcp},
      {"socketForConnect", SocketForConnect},
      {"originalDst", OriginalDst},
      {"setMark", SetMark},
      {"getMark", GetMark},
      {"setTransparent", SetTransparent},
      {"namespaceType", NamespaceType},
      {"writeNetSysctl", WriteNetSysctl},
      {"seqpacketListen", SeqpacketListen},
      {"seqpacketConnect", SeqpacketConnect},
      {"seqpacketAccept", SeqpacketAccept},
      {"seqpacketSend", SeqpacketSend},
      {"seqpacketRecv", SeqpacketRecv},
      {"peerCredentials", PeerCredentials},
      {"pollStart", PollStart},
      {"pollUpdate", PollUpdate},
      {"pollClose", PollClose},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    NAPI_CALL(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn));
    NAPI_CALL(env, napi_set_named_property(env, exports, fns[i].name, fn));
  }
  return exports;
}
