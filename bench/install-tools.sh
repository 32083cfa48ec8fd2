#!/usr/bin/env bash
# Install the load-test tools of bench/gateway.py from Debian's packages: nginx and wrk.
#
#   bash bench/install-tools.sh
#
# Idempotent: when both are already installed it only says so. Otherwise it
# runs `apt-get update` once and `apt-get install -y --no-install-recommends`
# for the missing ones. nginx's split_clients is in its core http module, so
# any Debian nginx package will do: `nginx` (the plain server, which carries
# the binary itself on Debian 12) is preferred, `nginx-light` taken when only
# it has a candidate. The packaged service is never started (a temporary
# policy-rc.d says no, unless one is already there): bench/gateway.py runs
# its own nginx instances on free loopback ports.
#
# Needs root (or password-less sudo). Exits non-zero with a message saying
# why when it cannot install; bench/gateway.py and tests/bench rely on that.
set -euo pipefail

say() { echo "install-tools: $*" >&2; }
fail() {
  say "$*"
  exit 1
}

# nginx lives in /usr/sbin, which a non-root PATH may lack
found() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
found nginx || missing+=(nginx)
found wrk || missing+=(wrk)
if [ ${#missing[@]} -eq 0 ]; then
  say "nginx and wrk are already installed"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
  fail "cannot install ${missing[*]}: no apt-get here (not Debian?); install them by hand"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    fail "cannot install ${missing[*]}: not root and no password-less sudo;" \
      "run 'sudo bash bench/install-tools.sh' once"
  fi
fi

export DEBIAN_FRONTEND=noninteractive
say "installing ${missing[*]} from Debian's packages (apt-get update first)"
"${SUDO[@]}" apt-get update -q >&2 || fail "apt-get update failed"

candidate() { # package -> exit 0 when apt can install it
  local c
  c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}

packages=()
for tool in "${missing[@]}"; do
  if [ "$tool" = nginx ]; then
    if candidate nginx; then
      packages+=(nginx)
    elif candidate nginx-light; then
      packages+=(nginx-light)
    else
      fail "no installable nginx package (apt-cache policy nginx nginx-light shows no candidate)"
    fi
  else
    candidate "$tool" || fail "no installable $tool package (apt-cache policy $tool)"
    packages+=("$tool")
  fi
done

# keep the packaged nginx service from starting (it would take port 80)
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# bench/install-tools.sh: no service starts while it installs\nexit 101\n' |
    "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  made_policy=1
fi
cleanup() {
  if [ "$made_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

say "apt-get install -y --no-install-recommends ${packages[*]}"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" >&2 ||
  fail "apt-get install ${packages[*]} failed"

for tool in nginx wrk; do
  found "$tool" || fail "$tool is still missing after installing ${packages[*]}"
done
say "installed: $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1), wrk $(dpkg-query -W -f='${Version}' wrk)"
