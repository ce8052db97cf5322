#!/usr/bin/env bash
# Install the named Debian/Ubuntu packages whose commands are missing; explain when not root.
set -euo pipefail
missing=()
for pkg in "$@"; do
  case "$pkg" in
    redis-server) cmd=redis-server ;;
    nginx) cmd=nginx ;;
    chromium) cmd=chromium ;;
    wrk) cmd=wrk ;;
    *) cmd=$pkg ;;
  esac
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages' own services are not used: the stack runs its own processes on its own ports.
for svc in redis-server nginx; do
  if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
