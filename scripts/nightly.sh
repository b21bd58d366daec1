#!/usr/bin/env bash
# Nightly refresh, for cron (scripts/crontab.example) or a systemd timer (scripts/distill-refresh.{service,timer}).
#
# Runs `distill refresh` from this checkout's .venv with $DISTILL_CONFIG (default ./distill.toml when it
# exists); extra arguments are passed on (e.g. `nightly.sh --max-seconds 14400`). Every run writes
# <workdir>/refresh-YYYYMMDD-HHMMSS/refresh_summary.json, whatever the outcome.
#
# Exit codes of `distill refresh`, and what this script makes of them:
#   0  a new version was published (also when the budget ran out part way: what was made within it
#      is published, and the summary says budget.exhausted)
#   8  nothing new tonight: every new row duplicated the release or was dropped  -> exits 0
#   7  budget exhausted before any new row could be published (nothing published)
#   6  another refresh still holds the lock (it exits at once; tonight is skipped)
#   4  teacher unavailable (the ping before any work got no answer)
#   3  data error, 2 config error, 5 write failed (disk full, permissions)
# Anything but 0 marks the systemd unit failed; the log line below says which outcome it was.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
config="${DISTILL_CONFIG:-$here/distill.toml}"
args=(refresh --no-progress)
[ -f "$config" ] && args+=(--config "$config")
echo "distill refresh: starting at $(date -u +%FT%TZ)"
"$here/.venv/bin/distill" "${args[@]}" "$@"
rc=$?
case $rc in
  0) echo "distill refresh: published a new version" ;;
  8) echo "distill refresh: nothing new tonight"; rc=0 ;;
  7) echo "distill refresh: budget exhausted before anything new; nothing published" ;;
  6) echo "distill refresh: the previous run still holds the lock; skipped" ;;
  4) echo "distill refresh: teacher unavailable; nothing generated" ;;
  *) echo "distill refresh: failed with exit code $rc" ;;
esac
exit $rc
