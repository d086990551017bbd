#!/usr/bin/env bash
# Builds the AMC Sync tray app and runs its end-to-end WebDriver test
# (tests/e2e/test_tray.py) under Xvfb and a private D-Bus session.
#
# Installs no system packages. Needs (Debian 12; see ../../shared/TOOLCHAIN.md):
#   apt-get install -y build-essential pkg-config curl file libwebkit2gtk-4.1-dev \
#     libayatana-appindicator3-dev librsvg2-dev libssl-dev libxdo-dev xvfb xauth webkit2gtk-driver
# Installs, when missing: tauri-driver (cargo install --locked) and the pinned selenium
# (pip, tests/e2e/requirements.txt).
#
# Environment:
#   CARGO_TARGET_DIR   default <repo>/target-tray (kept apart from the core's target/)
#   AMC_SYNC_BIN       core CLI used for `amc-sync sandbox` (default: built here)
#   E2E_TIMEOUT        seconds for the whole e2e run (default 300)
# Screenshots and logs: tests/e2e/artifacts/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-tray}"
E2E_TIMEOUT="${E2E_TIMEOUT:-300}"
APT_LINE="apt-get install -y build-essential pkg-config curl file libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev libxdo-dev xvfb xauth webkit2gtk-driver"

missing=()
for tool in pkg-config xvfb-run dbus-run-session WebKitWebDriver gdbus timeout python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
pkg-config --exists webkit2gtk-4.1 2>/dev/null || missing+=("libwebkit2gtk-4.1-dev")
if ((${#missing[@]})); then
    echo "tray ci: missing: ${missing[*]}" >&2
    echo "tray ci: install the system packages first: $APT_LINE" >&2
    exit 1
fi

echo "== tray ci: build (target dir $CARGO_TARGET_DIR)"
cd "$ROOT"
start=$(date +%s)
# One build for both binaries: the app and the core CLI the test uses for the sandbox.
cargo build --locked -p amc-sync-tray -p amc-sync --bins
echo "   built in $(($(date +%s) - start)) s"

echo "== tray ci: unit tests"
cargo test --locked -p amc-sync-tray

if ! command -v tauri-driver >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
    echo "== tray ci: installing tauri-driver"
    timeout 900 cargo install tauri-driver --locked
fi
export PATH="$HOME/.cargo/bin:$PATH"

if ! python3 -c 'import selenium' >/dev/null 2>&1; then
    echo "== tray ci: installing selenium (pinned)"
    python3 -m pip install -q -r "$HERE/tests/e2e/requirements.txt"
fi

for port in 4444 4445; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "tray ci: port $port is in use; tauri-driver needs 4444 and 4445 free" >&2
        exit 1
    fi
done

export AMC_SYNC_BIN="${AMC_SYNC_BIN:-$CARGO_TARGET_DIR/debug/amc-sync}"
export AMC_SYNC_TRAY_BIN="${AMC_SYNC_TRAY_BIN:-$CARGO_TARGET_DIR/debug/amc-sync-tray}"
export E2E_TIMEOUT
mkdir -p "$HERE/tests/e2e/artifacts"
rm -f "$HERE/tests/e2e/artifacts/"*

echo "== tray ci: e2e (xvfb-run + dbus-run-session, tauri-driver --port 4444 --native-port 4445)"
# The test starts tauri-driver itself, always with both ports and under `timeout`.
# Desktop-session noise (portal, pipewire, a11y) goes to a log file.
set +e
timeout -k 15 $((E2E_TIMEOUT + 60)) xvfb-run -a dbus-run-session -- \
    python3 "$HERE/tests/e2e/test_tray.py" 2> "$HERE/tests/e2e/artifacts/session-stderr.log"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "tray ci: e2e failed (exit $rc); last lines of the session's stderr:" >&2
    tail -n 40 "$HERE/tests/e2e/artifacts/session-stderr.log" >&2 || true
fi
echo "   artifacts: $(ls "$HERE/tests/e2e/artifacts" | tr '\n' ' ')"
exit "$rc"
