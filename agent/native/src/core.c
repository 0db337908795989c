// The native forwarding core: one I/O thread with epoll and OpenSSL that
// accepts on its listeners, terminates or originates mesh mTLS and splices
// bytes, for opaque (tcp) ports. It decides nothing: every accepted
// connection, verified handshake and dial result goes up to TypeScript as an
// event (batched through one thread-safe function call), and TypeScript
// answers with a command (dial this endpoint, splice, close, release the fd
// to Node). So the snapshot, the balancer, SPIFFE checks, revocation, policy
// and the records stay in TypeScript (agent/native/core.ts, datapath.ts).
//
// Threads: the JS thread only enqueues commands (a mutex and an eventfd)
// and swaps TLS contexts (a mutex); every socket and SSL object belongs to
// the I/O thread. Sockets are edge-triggered and registered once; every
// event on a connection runs its state machine until nothing moves.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define BUFSZ 16384
#define PEEK_MAX (16384 + 5)
#define HANDSHAKE_MS 10000
#define MAX_URIS 8
#define MAX_URI_LEN 2048

enum { EV_ACCEPT = 1, EV_HANDOFF = 2, EV_SECURED = 3, EV_HANDSHAKE_FAILED = 4, EV_DIALED = 5, EV_OPENED = 6, EV_CLOSED = 7, EV_RELEASED = 8 };
enum { C_DIAL = 1, C_SPLICE, C_DROP_UP, C_CLOSE, C_RELEASE, C_UNLISTEN, C_LISTEN, C_STOP };
enum { S_WAIT = 1, S_PEEK, S_HS_SERVER, S_DIALING, S_HS_CLIENT, S_SPLICE, S_DEAD };
enum { UP_NONE = 0, UP_ERROR = 1, UP_END = 2, UP_CLOSED = 3 };
enum { REF_LISTENER = 1, REF_END = 2, REF_WAKE = 3 };

typedef struct ep_ref {
  int kind;
  void *p;
  int idx;
} ep_ref;

typedef struct listener {
  ep_ref ref;
  int id;
  int fd;
  int mtls;
  struct listener *next;
} listener;

typedef struct end {
  int fd;
  SSL *ssl;
  int rd_eof;   // EOF (or close_notify) read
  int rd_ready; // plain end: the kernel may hold bytes (an epoll edge since the last short read)
  int hup;      // the peer's FIN (or an error) was signalled: read until EOF, whatever the size
  int wr_shut;  // our FIN (and close_notify) sent
  uint64_t rd_bytes, wr_bytes;
  ep_ref ref;
} end;

typedef struct conn {
  uint32_t id;
  int state;
  int listener_id;
  end e[2];  // 0: downstream (accepted), 1: upstream (dialed)
  unsigned char *buf[2];
  size_t off[2], len[2];
  int64_t deadline;
  int auto_splice;
  int up_tls;
  char sni[256];
  unsigned char *peek;
  int down_ended_first;
  int up_end;
  struct core *core;
  char skey[340];
  struct conn *hnext;           // id hash chain
  struct conn *tnext, *tprev;   // timed list
  int timed;
  struct conn *dnext;           // graveyard
} conn;

typedef struct cmd {
  int type;
  uint32_t id;
  int a, b, c;
  char host[64];
  char sni[256];
  struct cmd *next;
} cmd;

// One event for JS; strings owned (malloc) and freed after conversion.
typedef struct event {
  int type;
  uint32_t id;
  int i1, i2, i3, i4;
  double d1, d2, d3, d4;
  char *s1, *s2, *s3, *s4;
  char *uris[MAX_URIS];
  int nuris;
} event;

#define HASH 4096
#define SESSIONS 1024
typedef struct session_entry {
  char key[340];
  SSL_SESSION *s;
  uint32_t gen;
  uint64_t used;
} session_entry;

typedef struct core {
  int ep;
  int wake;
  pthread_t thread;
  int running;
  pthread_mutex_t mu;  // commands, events, contexts
  cmd *cmds, *cmds_tail;
  event *evs;
  size_t nevs, capevs;
  napi_threadsafe_function tsfn;
  SSL_CTX *srv_ctx, *cli_ctx, *probe_ctx;
  listener *listeners;
  int next_listener;
  uint32_t next_id;
  conn *hash[HASH];
  conn *timed;
  conn *grave;
  ep_ref wake_ref;
  size_t open;
  // Client sessions by endpoint address:port/SNI (I/O thread only); an
  // entry from before the last setTls (another generation) is never used.
  session_entry sessions[SESSIONS];
  uint32_t tls_gen;
  uint64_t session_clock;
} core;

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

// ---- events (I/O thread -> JS) ----

static void post(core *c, event *ev) {
  pthread_mutex_lock(&c->mu);
  int was_empty = c->nevs == 0;
  if (c->nevs == c->capevs) {
    size_t cap = c->capevs ? c->capevs * 2 : 64;
    event *n = realloc(c->evs, cap * sizeof(event));
    if (!n) {
      pthread_mutex_unlock(&c->mu);
      return;
    }
    c->evs = n;
    c->capevs = cap;
  }
  c->evs[c->nevs++] = *ev;
  pthread_mutex_unlock(&c->mu);
  if (was_empty) napi_call_threadsafe_function(c->tsfn, NULL, napi_tsfn_nonblocking);
}

static void ev_simple(core *c, int type, uint32_t id) {
  event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.id = id;
  post(c, &ev);
}

static void addr_of(int fd, int peer, char *out, size_t n, int *port) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  out[0] = 0;
  *port = 0;
  if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &len) : getsockname(fd, (struct sockaddr *)&ss, &len)) != 0) return;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, out, n);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, out, n);
    *port = ntohs(a->sin6_port);
  }
}

// The last OpenSSL error (or the verify result) as text.
static void ssl_reason(SSL *ssl, char *out, size_t n) {
  long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  unsigned long e = ERR_peek_last_error();
  if (vr != X509_V_OK) snprintf(out, n, "%s", X509_verify_cert_error_string(vr));
  else if (e) ERR_error_string_n(e, out, n);
  else snprintf(out, n, "%s", errno ? strerror(errno) : "connection closed during the handshake");
  ERR_clear_error();
}

// URI SANs of the peer's certificate, raw; the serial as uppercase hex.
static void peer_identity(SSL *ssl, event *ev, char **serial) {
  *serial = dupstr("");
  X509 *cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return;
  ASN1_INTEGER *sn = X509_get_serialNumber(cert);
  BIGNUM *bn = sn ? ASN1_INTEGER_to_BN(sn, NULL) : NULL;
  if (bn) {
    char *hex = BN_bn2hex(bn);
    if (hex) {
      free(*serial);
      *serial = dupstr(hex);
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
      GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
      if (g->type != GEN_URI) continue;
      if (ev->nuris == MAX_URIS) {
        ev->i4 = 1;  // more than we report: counted as too many
        continue;
      }
      const unsigned char *d = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
      int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
      if (len > MAX_URI_LEN) len = MAX_URI_LEN;
      char *u = malloc((size_t)len + 1);
      if (!u) continue;
      // Bytes outside printable ASCII become 0x7f, which no SPIFFE ID
      // contains: such a SAN still counts, and never matches.
      for (int k = 0; k < len; k++) u[k] = (d[k] >= 0x20 && d[k] < 0x7f) ? (char)d[k] : 0x7f;
      u[len] = 0;
      ev->uris[ev->nuris++] = u;
    }
    GENERAL_NAMES_free(names);
  }
  X509_free(cert);
}

// ---- connections ----

static conn *find(core *c, uint32_t id) {
  for (conn *x = c->hash[id % HASH]; x; x = x->hnext)
    if (x->id == id) return x;
  return NULL;
}

static session_entry *session_find(core *c, const char *key) {
  for (int i = 0; i < SESSIONS; i++)
    if (c->sessions[i].s && strcmp(c->sessions[i].key, key) == 0) return &c->sessions[i];
  return NULL;
}

static void session_drop(core *c, const char *key) {
  session_entry *e = session_find(c, key);
  if (!e) return;
  SSL_SESSION_free(e->s);
  e->s = NULL;
}

// Keeps a client session (TLS 1.3 tickets arrive after the handshake). Its
// peer certificate stays in it, and the identity is checked again from it
// on every resumed handshake.
static int session_new_cb(SSL *ssl, SSL_SESSION *sess) {
  conn *x = SSL_get_app_data(ssl);
  if (!x || !x->skey[0]) return 0;
  core *c = x->core;
  pthread_mutex_lock(&c->mu);
  uint32_t gen = c->tls_gen;
  pthread_mutex_unlock(&c->mu);
  session_entry *e = session_find(c, x->skey);
  if (!e) {
    e = &c->sessions[0];
    for (int i = 0; i < SESSIONS; i++) {
      if (!c->sessions[i].s) {
        e = &c->sessions[i];
        break;
      }
      if (c->sessions[i].used < e->used) e = &c->sessions[i];
    }
  }
  if (e->s) SSL_SESSION_free(e->s);
  snprintf(e->key, sizeof e->key, "%s", x->skey);
  e->s = sess;
  e->gen = gen;
  e->used = ++c->session_clock;
  return 1;
}

static void set_deadline(core *c, conn *x, int64_t at) {
  if (x->timed) {
    if (x->tprev) x->tprev->tnext = x->tnext;
    else c->timed = x->tnext;
    if (x->tnext) x->tnext->tprev = x->tprev;
    x->timed = 0;
    x->tnext = x->tprev = NULL;
  }
  x->deadline = at;
  if (at) {
    x->tnext = c->timed;
    x->tprev = NULL;
    if (c->timed) c->timed->tprev = x;
    c->timed = x;
    x->timed = 1;
  }
}

static void watch(core *c, end *e) {
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &e->ref;
  epoll_ctl(c->ep, EPOLL_CTL_ADD, e->fd, &ev);
}

static void end_close(end *e, int reset) {
  if (e->ssl) {
    SSL_free(e->ssl);
    e->ssl = NULL;
  }
  if (e->fd >= 0) {
    if (reset) {
      struct linger l = {1, 0};
      setsockopt(e->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(e->fd);
    e->fd = -1;
  }
}

// Unlinks and queues for freeing after this loop turn (later events in the
// same epoll batch may still point at it).
static void bury(core *c, conn *x) {
  conn **p = &c->hash[x->id % HASH];
  while (*p && *p != x) p = &(*p)->hnext;
  if (*p) *p = x->hnext;
  set_deadline(c, x, 0);
  x->state = S_DEAD;
  x->dnext = c->grave;
  c->grave = x;
  __atomic_sub_fetch(&c->open, 1, __ATOMIC_RELAXED);
}

static void finish(core *c, conn *x, const char *code, const char *msg, int reset) {
  if (x->state == S_DEAD) return;
  event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = EV_CLOSED;
  ev.id = x->id;
  ev.s1 = dupstr(code);
  ev.s2 = dupstr(msg);
  ev.d1 = (double)x->e[0].wr_bytes;
  ev.d2 = (double)x->e[0].rd_bytes;
  ev.d3 = (double)x->e[1].rd_bytes;
  ev.d4 = (double)x->e[1].wr_bytes;
  if (x->up_end == UP_NONE && x->e[1].fd >= 0) x->up_end = UP_CLOSED;
  ev.i1 = x->up_end;
  ev.i2 = x->down_ended_first;
  end_close(&x->e[0], reset);
  end_close(&x->e[1], 0);
  bury(c, x);
  post(c, &ev);
}

static conn *new_conn(core *c, int fd, int listener_id) {
  conn *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->id = ++c->next_id;
  if (x->id == 0) x->id = ++c->next_id;
  x->listener_id = listener_id;
  x->core = c;
  x->e[0].fd = fd;
  x->e[1].fd = -1;
  for (int i = 0; i < 2; i++) {
    x->e[i].ref.kind = REF_END;
    x->e[i].ref.p = x;
    x->e[i].ref.idx = i;
  }
  x->hnext = c->hash[x->id % HASH];
  c->hash[x->id % HASH] = x;
  __atomic_add_fetch(&c->open, 1, __ATOMIC_RELAXED);
  return x;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---- the splice ----

#define IO_AGAIN (-1)
#define IO_EOF (-2)
#define IO_ERR (-3)

static long end_read(end *e, unsigned char *buf, size_t n, char *why, size_t wn) {
  if (e->ssl) {
    // The error queue is empty here: every error path below clears it.
    int r = SSL_read(e->ssl, buf, (int)n);
    if (r > 0) return r;
    int err = SSL_get_error(e->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return IO_AGAIN;
    if (err == SSL_ERROR_ZERO_RETURN) {
      ERR_clear_error();
      return IO_EOF;
    }
    // A TCP FIN without close_notify: Node takes it for an end too.
    if (err == SSL_ERROR_SYSCALL && errno == 0) return IO_EOF;
    if (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();
      return IO_EOF;
    }
    ssl_reason(e->ssl, why, wn);
    return IO_ERR;
  }
  ssize_t r = recv(e->fd, buf, n, 0);
  if (r > 0) {
    // A short read emptied the receive queue: the next byte brings a new
    // edge, so no read is tried (for an EAGAIN) until then.
    if ((size_t)r < n && !e->hup) e->rd_ready = 0;
    return r;
  }
  if (r == 0) return IO_EOF;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    e->rd_ready = 0;
    return IO_AGAIN;
  }
  snprintf(why, wn, "%s", strerror(errno));
  return IO_ERR;
}

static long end_write(end *e, const unsigned char *buf, size_t n, char *why, size_t wn) {
  if (e->ssl) {
    int r = SSL_write(e->ssl, buf, (int)n);
    if (r > 0) return r;
    int err = SSL_get_error(e->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return IO_AGAIN;
    ssl_reason(e->ssl, why, wn);
    if (!why[0]) snprintf(why, wn, "%s", strerror(errno));
    return IO_ERR;
  }
  ssize_t r = send(e->fd, buf, n, MSG_NOSIGNAL);
  if (r >= 0) return r;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return IO_AGAIN;
  snprintf(why, wn, "%s", strerror(errno));
  return IO_ERR;
}

// Sends our end: close_notify on TLS, then the TCP FIN. 1 done, 0 again, -1 error.
static int end_shutdown(end *e) {
  if (e->ssl) {
    ERR_clear_error();
    int r = SSL_shutdown(e->ssl);
    if (r < 0) {
      int err = SSL_get_error(e->ssl, r);
      if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) return 0;
      ERR_clear_error();
    }
  }
  shutdown(e->fd, SHUT_WR);
  return 1;
}

static void pump(core *c, conn *x) {
  char why[256];
  why[0] = 0;
  int progress = 1;
  while (progress) {
    progress = 0;
    for (int d = 0; d < 2; d++) {
      end *src = &x->e[d], *dst = &x->e[1 - d];
      while (x->len[d] > x->off[d]) {
        long n = end_write(dst, x->buf[d] + x->off[d], x->len[d] - x->off[d], why, sizeof why);
        if (n == IO_AGAIN) break;
        if (n < 0) {
          if (1 - d == 1) x->up_end = UP_ERROR;
          return finish(c, x, "", why, 0);
        }
        x->off[d] += (size_t)n;
        dst->wr_bytes += (uint64_t)n;
        progress = 1;
      }
      if (x->off[d] == x->len[d]) x->off[d] = x->len[d] = 0;
      if (x->len[d] == 0 && !src->rd_eof && (src->ssl || src->rd_ready)) {
        long n = end_read(src, x->buf[d], BUFSZ, why, sizeof why);
        if (n > 0) {
          x->len[d] = (size_t)n;
          src->rd_bytes += (uint64_t)n;
          progress = 1;
        } else if (n == IO_EOF) {
          src->rd_eof = 1;
          if (d == 0 && x->up_end == UP_NONE) x->down_ended_first = 1;
          if (d == 1 && x->up_end == UP_NONE) x->up_end = UP_END;
          progress = 1;
        } else if (n == IO_ERR) {
          if (d == 1) x->up_end = UP_ERROR;
          return finish(c, x, "", why, 0);
        }
      }
      if (x->len[d] == 0 && src->rd_eof && !dst->wr_shut) {
        int r = end_shutdown(dst);
        if (r == 1) {
          dst->wr_shut = 1;
          progress = 1;
        }
      }
    }
  }
  if (x->e[0].rd_eof && x->e[1].rd_eof && x->e[0].wr_shut && x->e[1].wr_shut) finish(c, x, "", "", 0);
}

static void start_splice(core *c, conn *x) {
  set_deadline(c, x, 0);
  x->e[0].rd_ready = x->e[1].rd_ready = 1;
  for (int i = 0; i < 2; i++) {
    if (!x->buf[i]) x->buf[i] = malloc(BUFSZ);
    if (!x->buf[i]) return finish(c, x, "KEDGE_NATIVE_NO_MEMORY", "out of memory for the splice buffers", 1);
  }
  x->state = S_SPLICE;
  pump(c, x);
}

// ---- handshakes ----

static void client_handshake(core *c, conn *x) {
  end *u = &x->e[1];
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(u->ssl);
  if (r == 1 && SSL_get_verify_result(u->ssl) != X509_V_OK) r = -2;
  if (r == 1) {
    set_deadline(c, x, 0);
    event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = EV_DIALED;
    ev.id = x->id;
    ev.i1 = 1;
    char *serial;
    peer_identity(u->ssl, &ev, &serial);
    free(serial);
    ev.i2 = SSL_session_reused(u->ssl);
    x->state = S_WAIT;
    post(c, &ev);
    return;
  }
  int err = r == -2 ? SSL_ERROR_SSL : SSL_get_error(u->ssl, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
  char why[256];
  ssl_reason(u->ssl, why, sizeof why);
  session_drop(c, x->skey);
  event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = EV_DIALED;
  ev.id = x->id;
  ev.i3 = (int)SSL_get_verify_result(u->ssl);
  ev.s1 = dupstr("KEDGE_UPSTREAM_TLS_FAILED");
  ev.s2 = dupstr(why);
  end_close(u, 0);
  set_deadline(c, x, 0);
  x->state = S_WAIT;
  post(c, &ev);
}

static void dial_failed(core *c, conn *x, const char *code, const char *why) {
  end_close(&x->e[1], 0);
  set_deadline(c, x, 0);
  x->state = S_WAIT;
  if (x->auto_splice) return finish(c, x, code, why, 0);
  event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = EV_DIALED;
  ev.id = x->id;
  ev.s1 = dupstr(code);
  ev.s2 = dupstr(why);
  post(c, &ev);
}

static void dial_progress(core *c, conn *x) {
  end *u = &x->e[1];
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == EINPROGRESS || err == EALREADY) return;
  if (err != 0) return dial_failed(c, x, x->auto_splice ? "KEDGE_TARGET_CONNECT_FAILED" : "KEDGE_UPSTREAM_CONNECT_FAILED", strerror(err));
  // Connected only once the peer address reads back.
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getpeername(u->fd, (struct sockaddr *)&ss, &sl) != 0) return;
  nodelay(u->fd);
  if (!x->up_tls) {
    if (x->auto_splice) {
      ev_simple(c, EV_OPENED, x->id);
      return start_splice(c, x);
    }
    event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = EV_DIALED;
    ev.id = x->id;
    ev.i1 = 1;
    set_deadline(c, x, 0);
    x->state = S_WAIT;
    post(c, &ev);
    return;
  }
  pthread_mutex_lock(&c->mu);
  SSL *ssl = c->cli_ctx ? SSL_new(c->cli_ctx) : NULL;
  uint32_t gen = c->tls_gen;
  pthread_mutex_unlock(&c->mu);
  if (!ssl) return dial_failed(c, x, "KEDGE_UPSTREAM_TLS_FAILED", "no TLS identity loaded in the native core");
  SSL_set_app_data(ssl, x);
  session_entry *se = session_find(c, x->skey);
  if (se && se->gen == gen) {
    SSL_set_session(ssl, se->s);
    se->used = ++c->session_clock;
  } else if (se) {
    session_drop(c, x->skey);
  }
  SSL_set_fd(ssl, u->fd);
  SSL_set_connect_state(ssl);
  SSL_set_tlsext_host_name(ssl, x->sni);
  u->ssl = ssl;
  x->state = S_HS_CLIENT;
  client_handshake(c, x);
}

static void do_dial(core *c, conn *x, cmd *m) {
  if (x->state != S_WAIT || x->e[1].fd >= 0) return;
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%d", m->a);
  x->up_tls = m->b & 1;
  x->auto_splice = (m->b & 2) != 0;
  snprintf(x->sni, sizeof x->sni, "%s", m->sni);
  snprintf(x->skey, sizeof x->skey, "%s:%d/%s", m->host, m->a, m->sni);
  if (getaddrinfo(m->host, port, &hints, &ai) != 0 || !ai) return dial_failed(c, x, "KEDGE_UPSTREAM_CONNECT_FAILED", "not a numeric address");
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(ai);
    return dial_failed(c, x, "KEDGE_UPSTREAM_CONNECT_FAILED", strerror(errno));
  }
  int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
  int cerr = errno;
  freeaddrinfo(ai);
  x->e[1].fd = fd;
  x->e[1].rd_eof = x->e[1].wr_shut = 0;
  x->e[1].rd_bytes = x->e[1].wr_bytes = 0;
  if (r != 0 && cerr != EINPROGRESS) return dial_failed(c, x, x->auto_splice ? "KEDGE_TARGET_CONNECT_FAILED" : "KEDGE_UPSTREAM_CONNECT_FAILED", strerror(cerr));
  x->state = S_DIALING;
  set_deadline(c, x, now_ms() + (m->c > 0 ? m->c : 5000));
  watch(c, &x->e[1]);
  dial_progress(c, x);
}

static void server_handshake(core *c, conn *x) {
  end *d = &x->e[0];
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(d->ssl);
  if (r == 1 && SSL_get_verify_result(d->ssl) != X509_V_OK) r = -2;
  if (r == 1) {
    set_deadline(c, x, 0);
    event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = EV_SECURED;
    ev.id = x->id;
    ev.i1 = x->listener_id;
    const char *sni = SSL_get_servername(d->ssl, TLSEXT_NAMETYPE_host_name);
    ev.s1 = dupstr(sni ? sni : "");
    peer_identity(d->ssl, &ev, &ev.s2);
    ev.i2 = SSL_session_reused(d->ssl);
    char a[64];
    int port;
    addr_of(d->fd, 1, a, sizeof a, &port);
    ev.s3 = dupstr(a);
    ev.i3 = port;
    addr_of(d->fd, 0, a, sizeof a, &port);
    ev.s4 = dupstr(a);
    x->state = S_WAIT;
    post(c, &ev);
    return;
  }
  int err = r == -2 ? SSL_ERROR_SSL : SSL_get_error(d->ssl, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
  event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = EV_HANDSHAKE_FAILED;
  ev.id = x->id;
  ev.i1 = x->listener_id;
  ev.i4 = (int)SSL_get_verify_result(d->ssl);
  unsigned long e = ERR_peek_last_error();
  const char *rs = e ? ERR_reason_error_string(e) : NULL;
  ev.s2 = dupstr(rs ? rs : "");
  char why[256];
  ssl_reason(d->ssl, why, sizeof why);
  ev.s1 = dupstr(why);
  char a[64];
  int port;
  addr_of(d->fd, 1, a, sizeof a, &port);
  ev.s3 = dupstr(a);
  ev.i3 = port;
  end_close(d, 0);
  bury(c, x);
  post(c, &ev);
}

// 0 none, 1 offered no ALPN, 2 offered ALPN (stored in app data).
static int hello_cb(SSL *s, int *al, void *arg) {
  (void)al;
  (void)arg;
  int *res = SSL_get_app_data(s);
  const unsigned char *out;
  size_t outlen;
  *res = SSL_client_hello_get0_ext(s, TLSEXT_TYPE_application_layer_protocol_negotiation, &out, &outlen) ? 2 : 1;
  return SSL_CLIENT_HELLO_ERROR;
}

static void release_fd(core *c, conn *x, int type) {
  event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.id = x->id;
  ev.i1 = x->listener_id;
  ev.i2 = x->e[0].fd;
  epoll_ctl(c->ep, EPOLL_CTL_DEL, x->e[0].fd, NULL);
  x->e[0].fd = -1;
  end_close(&x->e[1], 0);
  free(x->peek);
  x->peek = NULL;
  bury(c, x);
  post(c, &ev);
}

// Reads the ClientHello without consuming it and lets OpenSSL parse it: a
// client that offers ALPN (pooled HTTP/1.1, HTTP/2) or sends something that
// is not a ClientHello goes to Node's TLS server with every byte still in
// the kernel; one that offers none (opaque TCP) is handshaken here.
static void peek_hello(core *c, conn *x) {
  if (!x->peek) x->peek = malloc(PEEK_MAX);
  if (!x->peek) return finish(c, x, "KEDGE_NATIVE_NO_MEMORY", "out of memory", 1);
  ssize_t n = recv(x->e[0].fd, x->peek, PEEK_MAX, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) return release_fd(c, x, EV_HANDOFF);
  int res = 0;
  SSL *p = SSL_new(c->probe_ctx);
  if (!p) return release_fd(c, x, EV_HANDOFF);
  BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
  BIO_write(rb, x->peek, (int)n);
  SSL_set_bio(p, rb, wb);
  SSL_set_app_data(p, &res);
  SSL_set_accept_state(p);
  int r = SSL_do_handshake(p);
  int want_more = res == 0 && r <= 0 && SSL_get_error(p, r) == SSL_ERROR_WANT_READ;
  SSL_free(p);
  ERR_clear_error();
  if (want_more && n < PEEK_MAX) return;  // the rest of the ClientHello is still on its way
  if (res != 1) return release_fd(c, x, EV_HANDOFF);
  free(x->peek);
  x->peek = NULL;
  pthread_mutex_lock(&c->mu);
  SSL *ssl = c->srv_ctx ? SSL_new(c->srv_ctx) : NULL;
  pthread_mutex_unlock(&c->mu);
  if (!ssl) return release_fd(c, x, EV_HANDOFF);
  SSL_set_fd(ssl, x->e[0].fd);
  SSL_set_accept_state(ssl);
  x->e[0].ssl = ssl;
  x->state = S_HS_SERVER;
  server_handshake(c, x);
}

static void on_end_event(core *c, conn *x, int idx, uint32_t events) {
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) x->e[idx].rd_ready = 1;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) x->e[idx].hup = 1;
  switch (x->state) {
    case S_PEEK:
      if (idx == 0) peek_hello(c, x);
      break;
    case S_HS_SERVER:
      if (idx == 0) server_handshake(c, x);
      break;
    case S_DIALING:
      if (idx == 1) dial_progress(c, x);
      break;
    case S_HS_CLIENT:
      if (idx == 1) client_handshake(c, x);
      break;
    case S_SPLICE:
      pump(c, x);
      break;
    default:
      break;  // waiting for JS: bytes stay in the kernel
  }
}

static void on_accept(core *c, listener *l) {
  for (;;) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or EMFILE and the like: try again on the next edge
    nodelay(fd);
    conn *x = new_conn(c, fd, l->id);
    if (!x) {
      close(fd);
      continue;
    }
    watch(c, &x->e[0]);
    if (l->mtls) {
      x->state = S_PEEK;
      set_deadline(c, x, now_ms() + HANDSHAKE_MS);
      peek_hello(c, x);
    } else {
      x->state = S_WAIT;
      event ev;
      memset(&ev, 0, sizeof ev);
      ev.type = EV_ACCEPT;
      ev.id = x->id;
      ev.i1 = l->id;
      char a[64];
      int port;
      addr_of(fd, 1, a, sizeof a, &port);
      ev.s1 = dupstr(a);
      ev.i2 = port;
      post(c, &ev);
    }
  }
}

static void expire(core *c) {
  int64_t t = now_ms();
  conn *x = c->timed;
  while (x) {
    conn *next = x->tnext;
    if (x->deadline && x->deadline <= t) {
      if (x->state == S_PEEK || x->state == S_HS_SERVER) {
        event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = EV_HANDSHAKE_FAILED;
        ev.id = x->id;
        ev.i1 = x->listener_id;
        ev.s1 = dupstr("the client did not complete the TLS handshake within 10 s");
        ev.s3 = dupstr("");
        end_close(&x->e[0], 0);
        bury(c, x);
        post(c, &ev);
      } else if (x->state == S_DIALING || x->state == S_HS_CLIENT) {
        dial_failed(c, x, "KEDGE_CONNECT_TIMEOUT", "did not complete TCP and TLS setup in time");
      } else {
        set_deadline(c, x, 0);
      }
    }
    x = next;
  }
}

static void run_cmd(core *c, cmd *m) {
  if (m->type == C_UNLISTEN) {
    for (listener **p = &c->listeners; *p; p = &(*p)->next) {
      if ((*p)->id != m->a) continue;
      listener *l = *p;
      *p = l->next;
      close(l->fd);
      free(l);
      break;
    }
    return;
  }
  if (m->type == C_LISTEN) {
    listener *l = calloc(1, sizeof *l);
    if (!l) return;
    l->id = m->a;
    l->fd = m->b;
    l->mtls = m->c;
    l->ref.kind = REF_LISTENER;
    l->ref.p = l;
    l->next = c->listeners;
    c->listeners = l;
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLET;
    ev.data.ptr = &l->ref;
    epoll_ctl(c->ep, EPOLL_CTL_ADD, l->fd, &ev);
    on_accept(c, l);
    return;
  }
  conn *x = find(c, m->id);
  if (!x) return;
  switch (m->type) {
    case C_DIAL:
      do_dial(c, x, m);
      break;
    case C_SPLICE:
      if (x->state == S_WAIT && x->e[1].fd >= 0) start_splice(c, x);
      break;
    case C_DROP_UP:
      // The endpoint was not who it should be: its session goes too.
      if (x->state == S_WAIT) {
        session_drop(c, x->skey);
        end_close(&x->e[1], 0);
      }
      break;
    case C_CLOSE:
      finish(c, x, "", "closed by the proxy", m->a);
      break;
    case C_RELEASE:
      if (x->state == S_WAIT) release_fd(c, x, EV_RELEASED);
      break;
  }
}

static void *loop(void *arg) {
  core *c = arg;
  struct epoll_event evs[256];
  int64_t last_expire = now_ms();
  while (c->running) {
    int n = epoll_wait(c->ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      ep_ref *r = evs[i].data.ptr;
      if (r->kind == REF_WAKE) {
        uint64_t v;
        if (read(c->wake, &v, sizeof v) < 0) { /* drained */ }
        pthread_mutex_lock(&c->mu);
        cmd *m = c->cmds;
        c->cmds = c->cmds_tail = NULL;
        pthread_mutex_unlock(&c->mu);
        while (m) {
          cmd *next = m->next;
          if (m->type == C_STOP) c->running = 0;
          else run_cmd(c, m);
          free(m);
          m = next;
        }
      } else if (r->kind == REF_LISTENER) {
        on_accept(c, r->p);
      } else {
        conn *x = r->p;
        if (x->state != S_DEAD) on_end_event(c, x, r->idx, evs[i].events);
      }
    }
    int64_t t = now_ms();
    if (t - last_expire >= 100) {
      expire(c);
      last_expire = t;
    }
    while (c->grave) {
      conn *x = c->grave;
      c->grave = x->dnext;
      free(x->buf[0]);
      free(x->buf[1]);
      free(x->peek);
      free(x);
    }
  }
  // Stopped: everything still open is closed, each with its record.
  for (int h = 0; h < HASH; h++)
    while (c->hash[h]) finish(c, c->hash[h], "", "the proxy closed", 0);
  while (c->grave) {
    conn *x = c->grave;
    c->grave = x->dnext;
    free(x->buf[0]);
    free(x->buf[1]);
    free(x->peek);
    free(x);
  }
  for (listener *l = c->listeners; l;) {
    listener *next = l->next;
    close(l->fd);
    free(l);
    l = next;
  }
  c->listeners = NULL;
  for (int i = 0; i < SESSIONS; i++) {
    if (c->sessions[i].s) SSL_SESSION_free(c->sessions[i].s);
    c->sessions[i].s = NULL;
  }
  return NULL;
}

// ---- N-API ----

#define CHECK(call)                                   \
  do {                                                \
    if ((call) != napi_ok) {                          \
      napi_throw_error(env, NULL, "N-API call failed: " #call); \
      return NULL;                                    \
    }                                                 \
  } while (0)

static napi_value str(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s ? s : "", NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static void free_event(event *e) {
  free(e->s1);
  free(e->s2);
  free(e->s3);
  free(e->s4);
  for (int i = 0; i < e->nuris; i++) free(e->uris[i]);
}

// On the JS thread: every queued event as one array of arrays, one call.
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)data;
  core *c = context;
  pthread_mutex_lock(&c->mu);
  event *evs = c->evs;
  size_t n = c->nevs;
  c->evs = NULL;
  c->nevs = c->capevs = 0;
  pthread_mutex_unlock(&c->mu);
  if (n == 0) return;
  if (env == NULL) {
    for (size_t i = 0; i < n; i++) free_event(&evs[i]);
    free(evs);
    return;
  }
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (size_t i = 0; i < n; i++) {
    event *e = &evs[i];
    napi_value a;
    napi_create_array(env, &a);
    uint32_t k = 0;
    napi_set_element(env, a, k++, num(env, e->type));
    napi_set_element(env, a, k++, num(env, e->id));
    napi_set_element(env, a, k++, num(env, e->i1));
    napi_set_element(env, a, k++, num(env, e->i2));
    napi_set_element(env, a, k++, num(env, e->i3));
    napi_set_element(env, a, k++, num(env, e->i4));
    napi_set_element(env, a, k++, num(env, e->d1));
    napi_set_element(env, a, k++, num(env, e->d2));
    napi_set_element(env, a, k++, num(env, e->d3));
    napi_set_element(env, a, k++, num(env, e->d4));
    napi_set_element(env, a, k++, str(env, e->s1));
    napi_set_element(env, a, k++, str(env, e->s2));
    napi_set_element(env, a, k++, str(env, e->s3));
    napi_set_element(env, a, k++, str(env, e->s4));
    napi_value uris;
    napi_create_array_with_length(env, (size_t)e->nuris, &uris);
    for (int j = 0; j < e->nuris; j++) napi_set_element(env, uris, (uint32_t)j, str(env, e->uris[j]));
    napi_set_element(env, a, k++, uris);
    napi_set_element(env, arr, (uint32_t)i, a);
    free_event(e);
  }
  free(evs);
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_call_function(env, undef, cb, 1, &arr, NULL);
}

static void core_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  core *c = data;
  if (c->running) {
    c->running = 0;
    uint64_t one = 1;
    if (write(c->wake, &one, sizeof one) < 0) { /* thread exits on its timeout */ }
    pthread_join(c->thread, NULL);
  }
  // The core object is leaked on purpose if the thread-safe function is
  // still pending; a Proxy always calls destroy() first.
}

static core *get_core(napi_env env, napi_value v) {
  core *c = NULL;
  if (napi_get_value_external(env, v, (void **)&c) != napi_ok || !c) {
    napi_throw_type_error(env, NULL, "expected a native core handle");
    return NULL;
  }
  return c;
}

static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  core *c = calloc(1, sizeof *c);
  if (!c) {
    napi_throw_error(env, "KEDGE_NATIVE_NO_MEMORY", "out of memory");
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  c->ep = epoll_create1(EPOLL_CLOEXEC);
  c->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  c->probe_ctx = SSL_CTX_new(TLS_server_method());
  if (c->ep < 0 || c->wake < 0 || !c->probe_ctx) {
    napi_throw_error(env, "KEDGE_NATIVE_CORE_FAILED", "cannot create the epoll instance, eventfd or probe TLS context");
    return NULL;
  }
  SSL_CTX_set_client_hello_cb(c->probe_ctx, hello_cb, NULL);
  c->wake_ref.kind = REF_WAKE;
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.ptr = &c->wake_ref;
  epoll_ctl(c->ep, EPOLL_CTL_ADD, c->wake, &ev);
  napi_value name = str(env, "kedge-native-core");
  CHECK(napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, c, call_js, &c->tsfn));
  c->running = 1;
  if (pthread_create(&c->thread, NULL, loop, c) != 0) {
    c->running = 0;
    napi_throw_error(env, "KEDGE_NATIVE_CORE_FAILED", "cannot start the native I/O thread");
    return NULL;
  }
  napi_value ext;
  CHECK(napi_create_external(env, c, core_finalize, NULL, &ext));
  return ext;
}

static void push(core *c, cmd *m) {
  pthread_mutex_lock(&c->mu);
  if (c->cmds_tail) c->cmds_tail->next = m;
  else c->cmds = m;
  c->cmds_tail = m;
  pthread_mutex_unlock(&c->mu);
  uint64_t one = 1;
  if (write(c->wake, &one, sizeof one) < 0) { /* counter saturated: already awake */ }
}

static int get_int(napi_env env, napi_value v) {
  int32_t i = 0;
  napi_get_value_int32(env, v, &i);
  return i;
}

static void get_str(napi_env env, napi_value v, char *out, size_t n) {
  size_t len;
  out[0] = 0;
  napi_get_value_string_utf8(env, v, out, n, &len);
}

// command(core, type, id, a, b, c, host, sni)
static napi_value js_command(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "command(core, type, id, ...)");
    return NULL;
  }
  core *c = get_core(env, argv[0]);
  if (!c) return NULL;
  cmd *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->type = get_int(env, argv[1]);
  double id = 0;
  napi_get_value_double(env, argv[2], &id);
  m->id = (uint32_t)id;
  if (argc > 3) m->a = get_int(env, argv[3]);
  if (argc > 4) m->b = get_int(env, argv[4]);
  if (argc > 5) m->c = get_int(env, argv[5]);
  if (argc > 6) get_str(env, argv[6], m->host, sizeof m->host);
  if (argc > 7) get_str(env, argv[7], m->sni, sizeof m->sni);
  push(c, m);
  return NULL;
}

// listen(core, host, port, mtls) -> [listenerId, port]; throws with errno's code.
static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  core *c = get_core(env, argv[0]);
  if (!c) return NULL;
  char host[64];
  get_str(env, argv[1], host, sizeof host);
  int port = get_int(env, argv[2]);
  int mtls = get_int(env, argv[3]);
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  char ps[8];
  snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) {
    napi_throw_error(env, "EADDRNOTAVAIL", "not a numeric address");
    return NULL;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 511) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    const char *code = e == EADDRINUSE ? "EADDRINUSE" : e == EACCES ? "EACCES" : e == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : "EINVAL";
    napi_throw_error(env, code, strerror(e));
    return NULL;
  }
  freeaddrinfo(ai);
  char a[64];
  int bound;
  addr_of(fd, 0, a, sizeof a, &bound);
  int id = __atomic_add_fetch(&c->next_listener, 1, __ATOMIC_SEQ_CST);
  cmd *m = calloc(1, sizeof *m);
  m->type = C_LISTEN;
  m->a = id;
  m->b = fd;
  m->c = mtls;
  push(c, m);
  napi_value out;
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, num(env, id));
  napi_set_element(env, out, 1, num(env, bound));
  return out;
}

static int load_chain(SSL_CTX *ctx, const char *pem, char *why, size_t wn) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
  if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    snprintf(why, wn, "the certificate chain has no readable leaf certificate");
    X509_free(leaf);
    BIO_free(b);
    return 0;
  }
  X509_free(leaf);
  X509 *x;
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) SSL_CTX_add0_chain_cert(ctx, x);
  ERR_clear_error();
  BIO_free(b);
  return 1;
}

// As Node's: every certificate is looked at, the chain's verdict is read
// with SSL_get_verify_result once the handshake is done (and refused then).
static int verify_accept(int ok, X509_STORE_CTX *store) {
  (void)ok;
  (void)store;
  return 1;
}

static SSL_CTX *build_ctx(int server, const char *cert, const char *key, const char *ca, const char *ciphers, const char *suites, char *why, size_t wn) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_NO_AUTO_CHAIN);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  if ((ciphers[0] && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) || (suites[0] && SSL_CTX_set_ciphersuites(ctx, suites) != 1)) {
    snprintf(why, wn, "the cipher list is not accepted by OpenSSL");
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (!load_chain(ctx, cert, why, wn)) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  BIO *kb = BIO_new_mem_buf(key, -1);
  EVP_PKEY *pk = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
  BIO_free(kb);
  if (!pk || SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(why, wn, "the private key does not load or does not match the leaf certificate");
    EVP_PKEY_free(pk);
    SSL_CTX_free(ctx);
    return NULL;
  }
  EVP_PKEY_free(pk);
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  BIO *cb = BIO_new_mem_buf(ca, -1);
  X509 *x;
  int roots = 0;
  while ((x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
    X509_STORE_add_cert(store, x);
    if (server) SSL_CTX_add_client_CA(ctx, x);
    X509_free(x);
    roots++;
  }
  BIO_free(cb);
  ERR_clear_error();
  if (roots == 0) {
    snprintf(why, wn, "the trust bundle holds no certificate");
    SSL_CTX_free(ctx);
    return NULL;
  }
  // Chains are verified by OpenSSL's default callback: a failure ends the
  // handshake with an alert. The server requires a client certificate.
  SSL_CTX_set_verify(ctx, server ? (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT) : SSL_VERIFY_PEER, verify_accept);
  if (server) {
    static const unsigned char sid[] = "kedge-native";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, session_new_cb);
  }
  return ctx;
}

static char *get_alloc_str(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

// setTls(core, certChainPem, keyPem, trustBundlePem, cipherList, ciphersuites): new
// connections use it; open ones keep the context they were made with.
static napi_value js_set_tls(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "setTls(core, cert, key, ca, ciphers, suites)");
    return NULL;
  }
  core *c = get_core(env, argv[0]);
  if (!c) return NULL;
  char *s[5];
  for (int i = 0; i < 5; i++) s[i] = get_alloc_str(env, argv[i + 1]);
  char why[256] = "";
  SSL_CTX *srv = NULL, *cli = NULL;
  if (s[0] && s[1] && s[2] && s[3] && s[4]) {
    srv = build_ctx(1, s[0], s[1], s[2], s[3], s[4], why, sizeof why);
    if (srv) cli = build_ctx(0, s[0], s[1], s[2], s[3], s[4], why, sizeof why);
  }
  for (int i = 0; i < 5; i++) free(s[i]);
  if (!srv || !cli) {
    SSL_CTX_free(srv);
    napi_throw_error(env, "KEDGE_TLS_IDENTITY_INVALID", why[0] ? why : "the TLS identity does not load");
    return NULL;
  }
  pthread_mutex_lock(&c->mu);
  SSL_CTX *os = c->srv_ctx, *oc = c->cli_ctx;
  c->srv_ctx = srv;
  c->cli_ctx = cli;
  c->tls_gen++;  // no session outlives the identity or trust bundle it was made with
  pthread_mutex_unlock(&c->mu);
  SSL_CTX_free(os);
  SSL_CTX_free(oc);
  return NULL;
}

// destroy(core): stops the thread after closing every connection (their
// records are delivered), then releases the thread-safe function.
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  core *c = get_core(env, argv[0]);
  if (!c || !c->running) return NULL;
  cmd *m = calloc(1, sizeof *m);
  m->type = C_STOP;
  push(c, m);
  pthread_join(c->thread, NULL);
  c->running = 0;
  // Deliver what the last turn posted, then let the function go.
  napi_call_threadsafe_function(c->tsfn, NULL, napi_tsfn_nonblocking);
  napi_release_threadsafe_function(c->tsfn, napi_tsfn_release);
  return NULL;
}

static napi_value js_open_count(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  core *c = get_core(env, argv[0]);
  if (!c) return NULL;
  return num(env, (double)__atomic_load_n(&c->open, __ATOMIC_RELAXED));
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
      {"command", NULL, js_command, NULL, NULL, NULL, napi_default, NULL},
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"setTls", NULL, js_set_tls, NULL, NULL, NULL, napi_default, NULL},
      {"destroy", NULL, js_destroy, NULL, NULL, NULL, napi_default, NULL},
      {"openCount", NULL, js_open_count, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
