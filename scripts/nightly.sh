#!/usr/bin/env bash
# Nightly refresh, for cron or a systemd timer.
#
# Crontab line (02:30 every night; logs appended per day):
#   30 2 * * * /path/to/distill/scripts/nightly.sh >> /var/log/distill/nightly-$(date +\%F).log 2>&1
#
# Exit codes (from `distill refresh`): 0 published, 8 nothing new, 6 another run
# holds the lock, 4 teacher unavailable, 7 budget exhausted (what was made is
# published), 3 data error, 2 config error, 5 write failed (disk full).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
config="${DISTILL_CONFIG:-$here/distill.toml}"
args=(refresh --no-progress)
[ -f "$config" ] && args+=(--config "$config")
"$here/.venv/bin/distill" "${args[@]}"
rc=$?
case $rc in
  0) echo "distill refresh: published a new release" ;;
  8) echo "distill refresh: nothing new tonight"; rc=0 ;;
  6) echo "distill refresh: previous run still going; skipped" ;;
  *) echo "distill refresh: failed with exit code $rc" ;;
esac
exit $rc
