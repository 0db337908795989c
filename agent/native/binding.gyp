{
  "targets": [
    {
      "target_name": "kedge_native",
      "sources": ["src/original_dst.c", "src/flock.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "kedge_core",
      "sources": ["src/core.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-pthread"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
