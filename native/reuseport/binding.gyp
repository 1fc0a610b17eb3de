{
  "targets": [
    {
      "target_name": "reuseport",
      "sources": ["reuseport.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
