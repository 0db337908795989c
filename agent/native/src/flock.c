// flock(fd, LOCK_EX | LOCK_NB) for the federation's store lock. Node has no
// flock; a flock is released by the kernel when its holder dies (SIGKILL,
// OOM, a container stopped), so no stale lock survives a crash and no pid can
// be mistaken for the holder after it was reused.
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <node_api.h>

napi_value kedge_throw_errno(napi_env env, const char *what, int err);

// Returns true when the lock was taken, false when another open file holds it.
napi_value kedge_try_lock_exclusive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "tryLockExclusive(fd): fd must be a number");
    return NULL;
  }
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  napi_value out;
  if (rc == 0) {
    napi_get_boolean(env, 1, &out);
    return out;
  }
  if (errno == EWOULDBLOCK) {
    napi_get_boolean(env, 0, &out);
    return out;
  }
  return kedge_throw_errno(env, "flock", errno);
}
