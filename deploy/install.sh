#!/usr/bin/env bash
# Installs hearth as a systemd service on this machine: creates the system
# user `hearth` and /var/lib/hearth/models, copies the binary to
# /usr/local/bin/hearth, installs /etc/default/hearth (kept if present) and
# /etc/systemd/system/hearth.service, then enables and (re)starts it.
# Usage: sudo deploy/install.sh [PATH_TO_HEARTH_BINARY]
# The binary defaults to the native release build. Must run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}/release/hearth}"
if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo $0 $*)" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  echo "install.sh: no hearth binary at $bin (pass its path)" >&2
  exit 1
fi
command -v systemctl >/dev/null || { echo "install.sh: systemd is required" >&2; exit 1; }

getent group hearth >/dev/null || groupadd --system hearth
getent passwd hearth >/dev/null ||
  useradd --system --gid hearth --home-dir /var/lib/hearth --no-create-home \
    --shell /usr/sbin/nologin --comment "hearth model server" hearth
install -d -m 0750 -o hearth -g hearth /var/lib/hearth /var/lib/hearth/models
# Keys and certificates: readable by the service user only.
install -d -m 0700 -o hearth -g hearth /etc/hearth
[ -f /etc/hearth/keys ] || install -m 0600 -o hearth -g hearth /dev/null /etc/hearth/keys
install -m 0755 "$bin" /usr/local/bin/hearth
[ -f /etc/default/hearth ] || install -m 0644 "$here/hearth.default" /etc/default/hearth
install -m 0644 "$here/hearth.service" /etc/systemd/system/hearth.service
systemctl daemon-reload
systemctl enable hearth.service
systemctl restart hearth.service
echo "hearth installed: systemctl status hearth; logs: journalctl -u hearth -f"
