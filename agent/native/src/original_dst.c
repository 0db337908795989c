// getOriginalDst(fd): the address a connection was sent to before an
// iptables REDIRECT rewrote it, read from the conntrack entry with
// SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6). Plain Node-API, so
// one build works across Node versions.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <node_api.h>

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>;
// defined here because those headers clash with the libc socket headers.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

// Throws an Error whose `errno` property the TypeScript wrapper maps to a name.
napi_value kedge_throw_errno(napi_env env, const char *what, int err) {
  napi_value msg, error, num;
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
  return NULL;
}

static napi_value result(napi_env env, const char *address, int port, int family) {
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "address", v);
  napi_create_int32(env, port, &v);
  napi_set_named_property(env, obj, "port", v);
  napi_create_int32(env, family, &v);
  napi_set_named_property(env, obj, "family", v);
  return obj;
}

static napi_value get_original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "getOriginalDst(fd): fd must be a number");
    return NULL;
  }

  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) return kedge_throw_errno(env, "getsockname", errno);

  char text[INET6_ADDRSTRLEN];
  // A dual-stack (::) listener accepts IPv4 clients as v4-mapped addresses;
  // their NAT entry is an IPv4 one, which SOL_IP reads on an IPv6 socket too.
  int v4 = local.ss_family == AF_INET ||
           (local.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr));
  if (v4) {
    struct sockaddr_in dst;
    len = sizeof dst;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) return kedge_throw_errno(env, "getsockopt(SO_ORIGINAL_DST)", errno);
    inet_ntop(AF_INET, &dst.sin_addr, text, sizeof text);
    return result(env, text, ntohs(dst.sin_port), 4);
  }
  if (local.ss_family == AF_INET6) {
    struct sockaddr_in6 dst;
    len = sizeof dst;
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0) return kedge_throw_errno(env, "getsockopt(IP6T_SO_ORIGINAL_DST)", errno);
    inet_ntop(AF_INET6, &dst.sin6_addr, text, sizeof text);
    return result(env, text, ntohs(dst.sin6_port), 6);
  }
  return kedge_throw_errno(env, "getsockname", EAFNOSUPPORT);
}

napi_value kedge_try_lock_exclusive(napi_env env, napi_callback_info info);

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "getOriginalDst", NAPI_AUTO_LENGTH, get_original_dst, NULL, &fn);
  napi_set_named_property(env, exports, "getOriginalDst", fn);
  napi_create_function(env, "tryLockExclusive", NAPI_AUTO_LENGTH, kedge_try_lock_exclusive, NULL, &fn);
  napi_set_named_property(env, exports, "tryLockExclusive", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
