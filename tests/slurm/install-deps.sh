#!/usr/bin/env bash
# install-deps.sh - Debian packages the test suite needs (called by `make test` through `make system-deps`):
#   poppler-utils                              pdftoppm/pdftotext for the report tests (PDF -> PNG / text)
#   slurmctld slurmd slurm-client munge        a real one-node SLURM cluster (tests/slurm/slurm-up.sh)
# --no-install-recommends keeps it to ~13 MB and ~10 s (the slurm-wlm metapackage pulls 43 needless packages).
# Idempotent: does nothing (and needs no network) when everything is installed. Needs root (or sudo) otherwise.
set -euo pipefail

PKGS=(poppler-utils slurmctld slurmd slurm-client munge)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all present (${PKGS[*]})"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]} and no apt-get here; install them with your package manager" \
       "(the SLURM tests are skipped without them)" >&2
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    echo "install-deps: missing ${missing[*]}; run as root: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    echo "install-deps: continuing; tests that need them are skipped" >&2
    exit 0
  fi
fi
T0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# policy-rc.d 101: the package scripts must not try to start daemons (no systemd here; slurm-up.sh starts them)
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null && "${SUDO[@]}" chmod +x "$POLICY" && CREATED_POLICY=1
fi
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$CREATED_POLICY" = 1 ] && "${SUDO[@]}" rm -f "$POLICY"
echo "install-deps: installed ${missing[*]} in $(( $(date +%s) - T0 )) s"
