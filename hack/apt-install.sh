#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet (apt-get; sudo unless
# root). Nothing installed starts by itself.
set -euo pipefail
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
echo "installing$missing (apt-get)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
