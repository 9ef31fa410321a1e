#!/bin/sh
# Print the sr3c build requirements missing on this host, one name per line:
# gcc (the compiler given as $1), make, librabbitmq (>= 0.8), openssl, json-c.
# A library counts as present when its header compiles and it links.
cc=${1:-gcc}
command -v make >/dev/null 2>&1 || echo make
if ! command -v "$cc" >/dev/null 2>&1; then
  echo gcc
  exit 0
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
check() { # name header link-flag [extra preprocessor test]
  printf '#include <%s>\n%s\nint main(void) { return 0; }\n' "$2" "$4" > "$tmp/t.c"
  "$cc" "$tmp/t.c" -o "$tmp/t" "$3" >/dev/null 2>&1 || echo "$1"
}
check librabbitmq amqp.h -lrabbitmq \
  '#if AMQP_VERSION_MAJOR == 0 && AMQP_VERSION_MINOR < 8
#error librabbitmq older than 0.8
#endif'
check openssl openssl/evp.h -lcrypto
check json-c json-c/json.h -ljson-c
