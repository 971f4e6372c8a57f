#!/usr/bin/env bash
# System packages for the server tests: PostgreSQL and MariaDB servers (backend tests), Chromium (browser test,
# driven by Playwright; its own browser downloads are never used) and DejaVu fonts (PDF reports in any script).
# Idempotent: does nothing when everything is installed. Never fails the caller: without root or apt the
# dependent tests skip with a reason instead.
set -u
PACKAGES=(postgresql mariadb-server chromium fonts-dejavu-core)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: apt-get not available; missing ${missing[*]} (the tests needing them will skip)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_system_deps: not root; missing ${missing[*]} (the tests needing them will skip)" >&2
    exit 0
  fi
fi
echo "install_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's postinst scripts try to start services; there is no init system here, so tell them not to.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ -z "$SUDO" ] && [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
if $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "install_system_deps: done"
else
  echo "install_system_deps: apt-get failed; the tests needing ${missing[*]} will skip" >&2
fi
if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
exit 0
