#!/usr/bin/env bash
# Browser tests of the dashboard (ui/) against a real agent and the sandbox Amazon API.
#
#   npm ci --prefix tests/browser          # once (playwright-core only; never `npx playwright install`)
#   cargo build                            # target/debug/amc-sync, or set AMC_SYNC_BIN
#   tests/browser/run.sh                   # screenshots in tests/browser/artifacts/
#
# Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`) or CHROMIUM=path.
# Installs nothing and builds nothing. Starts `amc-sync sandbox` and `amc-sync run` on ephemeral
# ports in a temporary data dir and kills both on exit. KEEP_TMP=1 keeps the temp dir (logs).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${AMC_SYNC_BIN:-$ROOT/target/debug/amc-sync}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
ART="$HERE/artifacts"

die() { echo "run.sh: $*" >&2; exit 2; }
[ -x "$BIN" ] || die "no agent binary at $BIN (run \`cargo build\` or set AMC_SYNC_BIN)"
[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM (apt-get install -y chromium, or set CHROMIUM)"
[ -d "$HERE/node_modules/playwright-core" ] || die "playwright-core missing: npm ci --prefix tests/browser"
command -v node >/dev/null || die "node not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/amc-sync-browser.XXXXXX")
DATA="$WORK/data"
CFG="$WORK/config.toml"
mkdir -p "$DATA" "$ART"
SB_PID=""
AGENT_PID=""
NODE_PID=""

cleanup() {
  local rc=$?
  for pid in $NODE_PID $AGENT_PID $SB_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in $NODE_PID $AGENT_PID $SB_PID; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    echo "--- agent log (tail) ---" >&2; tail -n 30 "$WORK/agent.err" 2>/dev/null >&2 || true
    echo "--- sandbox log (tail) ---" >&2; tail -n 10 "$WORK/sandbox.err" 2>/dev/null >&2 || true
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "run.sh: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

json_get() { # json_get FILE KEY: a key of the file's JSON object (or of its first line's)
  node -e '
    const t = require("fs").readFileSync(process.argv[1], "utf8");
    let j; try { j = JSON.parse(t); } catch { j = JSON.parse(t.split("\n")[0]); }
    const v = j[process.argv[2]]; if (v == null) process.exit(1); process.stdout.write(String(v));
  ' "$1" "$2"
}

# 1. The sandbox Amazon Ads API (prints one JSON line with its URLs and test credentials).
"$BIN" sandbox --listen 127.0.0.1:0 >"$WORK/sandbox.json" 2>"$WORK/sandbox.err" &
SB_PID=$!
for _ in $(seq 1 100); do
  [ -s "$WORK/sandbox.json" ] && grep -q '}' "$WORK/sandbox.json" && break
  kill -0 "$SB_PID" 2>/dev/null || die "the sandbox exited: $(cat "$WORK/sandbox.err")"
  sleep 0.1
done
SB_URL=$(json_get "$WORK/sandbox.json" base_url) || die "no base_url from the sandbox"
SB_CLIENT_ID=$(json_get "$WORK/sandbox.json" client_id)
SB_CLIENT_SECRET=$(json_get "$WORK/sandbox.json" client_secret)
SB_REFRESH=$(json_get "$WORK/sandbox.json" refresh_token)

# 2. Config: the agent talks to the sandbox; uploads only on demand during the test.
cat >"$CFG" <<TOML
# Written by tests/browser/run.sh (no secrets).
api_base_url = "$SB_URL"

[schedule]
upload_interval_secs = 3600
TOML

# 3. Store the sandbox credentials in the data dir (as a user's earlier login would have).
#    The agent itself runs without AMC_SYNC_* in its environment, so logout can remove them.
if ! AMC_SYNC_CLIENT_ID="$SB_CLIENT_ID" AMC_SYNC_CLIENT_SECRET="$SB_CLIENT_SECRET" \
  AMC_SYNC_REFRESH_TOKEN="$SB_REFRESH" \
  "$BIN" login --from-env --data-dir "$DATA" --config "$CFG" >"$WORK/login.out" 2>"$WORK/login.err"; then
  echo "run.sh: warning: \`amc-sync login --from-env\` failed: $(cat "$WORK/login.err")" >&2
fi

# 4. The agent.
env -u AMC_SYNC_CLIENT_ID -u AMC_SYNC_CLIENT_SECRET -u AMC_SYNC_REFRESH_TOKEN \
  -u AMC_SYNC_CONFIG -u AMC_SYNC_DATA_DIR \
  "$BIN" run --data-dir "$DATA" --config "$CFG" --listen 127.0.0.1:0 --no-drop-folder \
  >"$WORK/agent.out" 2>"$WORK/agent.err" &
AGENT_PID=$!
AGENT_URL=""
for _ in $(seq 1 300); do
  kill -0 "$AGENT_PID" 2>/dev/null || die "the agent exited: $(tail -n 20 "$WORK/agent.err")"
  if [ -s "$DATA/agent.json" ] && AGENT_URL=$(json_get "$DATA/agent.json" listenUrl 2>/dev/null); then
    break
  fi
  # Older agents do not record listenUrl: take the address from the start banner.
  AGENT_URL=$(sed -n 's/^ *intake: *\(http:\/\/[0-9.:]*\).*/\1/p' "$WORK/agent.out" | head -n 1)
  [ -n "$AGENT_URL" ] && break
  sleep 0.1
done
[ -n "$AGENT_URL" ] || die "the agent did not write listenUrl to $DATA/agent.json"
ADMIN_TOKEN=$(json_get "$DATA/agent.json" adminToken)
WRITE_KEY=$(json_get "$DATA/agent.json" writeKey)

echo "run.sh: sandbox $SB_URL, agent $AGENT_URL, data dir $DATA"

# 5. The browser test.
#    In the background + `wait`, so a signal to this script runs the cleanup at once.
cd "$HERE"
AGENT_URL="$AGENT_URL" ADMIN_TOKEN="$ADMIN_TOKEN" WRITE_KEY="$WRITE_KEY" SANDBOX_URL="$SB_URL" \
  SANDBOX_CLIENT_ID="$SB_CLIENT_ID" SANDBOX_CLIENT_SECRET="$SB_CLIENT_SECRET" \
  UI_DIR="$ROOT/ui" ARTIFACTS="$ART" CHROMIUM="$CHROMIUM" CHROMIUM_PROFILE="$WORK/chromium-profile" \
  node "$HERE/dashboard.test.mjs" &
NODE_PID=$!
wait "$NODE_PID"
