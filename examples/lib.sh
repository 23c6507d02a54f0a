# Shared by the examples' run scripts (sourced, not run): mounts a fresh pipe directory, and unmounts it
# and removes everything again when the script exits, however it exits.
#
# After sourcing:  $MNT   the mounted pipe directory (the current directory)
#                  $WORK  a scratch directory for files that are not pipes
# and the functions below.
#
# The dnpipes binary is $DNPIPES_BIN, else .build/debug/dnpipes in this repository, else dnpipes on PATH.
# EXAMPLE_TIMEOUT (seconds, default 60) bounds the whole run.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
example=$(basename "$(cd "$(dirname "$0")" && pwd)")

log() { printf '%s: %s\n' "$example" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

if [ -n "${DNPIPES_BIN:-}" ]; then
  DNPIPES=$DNPIPES_BIN
elif [ -x "$repo/.build/debug/dnpipes" ]; then
  DNPIPES=$repo/.build/debug/dnpipes
elif command -v dnpipes >/dev/null 2>&1; then
  DNPIPES=$(command -v dnpipes)
else
  die "no dnpipes binary: run 'swift build', or set DNPIPES_BIN"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnpipes-$example-XXXXXX")
MNT=$WORK/pipes
DATA=$WORK/data
mkdir -p "$MNT" "$DATA"

# Kills a process and everything it started (a background loop and the cat it is blocked in).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null || true
}

# The script's own standard output and error, kept to go back to in cleanup: a script that fails in the
# middle of `... > pipe` still has the pipe open as its standard output, and that would keep the mount busy.
exec 8>&1 9>&2

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  exec 1>&8 2>&9
  cd /
  # Background jobs first: a reader still blocked in a pipe would keep the mount busy.
  local pid
  for pid in $(pgrep -P $$ 2>/dev/null); do kill_tree "$pid"; done
  wait 2>/dev/null || true
  if mountpoint -q "$MNT" 2>/dev/null; then
    local i
    for i in $(seq 50); do
      "$DNPIPES" unmount "$MNT" >/dev/null 2>&1 && break
      sleep 0.2
    done
    mountpoint -q "$MNT" 2>/dev/null && umount -l "$MNT" 2>/dev/null
  fi
  # Never remove files through a mount that is still there.
  if mountpoint -q "$MNT" 2>/dev/null; then
    log "could not unmount $MNT; left $WORK in place"
  else
    rm -rf "$WORK"
  fi
  if [ $status -eq 0 ]; then log "OK"; else log "exit status $status"; fi
  exit $status
}
trap cleanup EXIT
trap 'die "interrupted"' INT
trap 'die "timed out after ${EXAMPLE_TIMEOUT:-60}s"' TERM

# The watchdog: ends the whole run (through the traps above) if it takes too long.
( sleep "${EXAMPLE_TIMEOUT:-60}" && kill -TERM $$ ) 2>/dev/null &

"$DNPIPES" mount "$MNT" --data-dir "$DATA" >/dev/null || die "cannot mount $MNT"
cd "$MNT"

# await SECONDS PID...: waits for background processes; fails (naming them) if one is still running after
# SECONDS, or if one failed.
await() {
  local seconds=$1; shift
  local deadline=$(( $(date +%s) + seconds )) pid
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null; do
      [ "$(date +%s)" -lt "$deadline" ] || die "process $pid still running after ${seconds}s"
      sleep 0.1
    done
    wait "$pid" || die "process $pid failed (exit $?)"
  done
}
