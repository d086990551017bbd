#!/usr/bin/env python3
"""End-to-end test of the AMC Sync tray app (WebDriver via tauri-driver + WebKitWebDriver).

What it does:
  1. starts `amc-sync sandbox` (the fake Amazon Ads API) on an ephemeral port with fixed
     LWA credentials, and writes a temp config whose api_base_url points at it;
  2. stores the sandbox's credentials in the data dir (`amc-sync login --from-env`, file
     secret store: credentials in the environment would override any logout), then starts
     `tauri-driver --port 4444 --native-port 4445` (under `timeout`) with HOME and the XDG
     dirs pointing into the temp dir (the autostart entry lands there, never in the real
     user's ~/.config/autostart), and opens a WebDriver session on the tray app
     (`--data-dir`/`--config` passed as arguments), which runs the agent in-process;
  3. checks: the window opens on the agent's dashboard URL; the in-process agent answers
     (healthz, admin status with the token from <data dir>/agent.json); the dashboard shows
     live status (data-testid auth-state, pending-total); a Segment batch sent to the agent's
     /v1/batch with the data dir's write key shows up as pending; clicking upload-now makes
     the agent upload (the sandbox's GET /__sandbox/received holds the records);
  4. clicks the tray menu over D-Bus (dbusmenu), when the tray is exported on the session
     bus: Upload now, Pause/Resume, Region, then (after the single-instance check) Log out
     (GET /api/connection -> no_credentials, "Log in…", amber icon) and Start at login
     (check item and <HOME>/.config/autostart/<app>.desktop on, then off again);
  5. Quit from the tray menu (else SIGTERM): the in-process agent shuts down cleanly
     (agent.json loses its pid).

Must run under `xvfb-run -a` and `dbus-run-session` (see ../../ci.sh). Screenshots go to
artifacts/. Prints `N passed, N failed, N skipped` and exits non-zero on any failure.

Environment: AMC_SYNC_BIN (core CLI), AMC_SYNC_TRAY_BIN (the app), TAURI_DRIVER (default
`tauri-driver` on PATH), E2E_TIMEOUT (seconds for the whole run of tauri-driver, default 300).
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import zlib

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.options import ArgOptions

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_TAURI = os.path.dirname(os.path.dirname(HERE))
REPO = os.path.dirname(SRC_TAURI)
ARTIFACTS = os.path.join(HERE, "artifacts")
DRIVER_PORT = 4444
NATIVE_PORT = 4445

CLIENT_ID = "amzn1.application-oa2-client.e2etray"
CLIENT_SECRET = "e2e-tray-secret"
REFRESH_TOKEN = "Atzr|e2e-tray-refresh"
ADVERTISER_ID = "1234567890"

RESULTS = []  # (name, "passed"|"failed"|"skipped", detail)


def record(name, outcome, detail=""):
    RESULTS.append((name, outcome, detail))
    print(f"{outcome.upper():8} {name}{(': ' + detail) if detail else ''}", flush=True)


def check(name, cond, detail=""):
    record(name, "passed" if cond else "failed", detail)
    return cond


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method, url, body=None, headers=None, timeout=10):
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            ctype = r.headers.get("Content-Type", "")
            return r.status, (json.loads(raw) if "json" in ctype and raw else raw.decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode("utf-8", "replace")


def wait_for(what, fn, timeout=30, interval=0.5):
    """Polls fn() until it returns a truthy value; returns it, or None after timeout."""
    deadline = time.time() + timeout
    last_exc = None
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - polled
            last_exc = e
        time.sleep(interval)
    print(f"  (gave up waiting for {what}{': ' + repr(last_exc) if last_exc else ''})", flush=True)
    return None


def find_bin(env_name, default):
    path = os.environ.get(env_name) or default
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        sys.exit(f"error: {env_name}: no executable at {path} (build it first; see src-tauri/ci.sh)")
    return os.path.abspath(path)


def start_sandbox(amc_sync, workdir):
    log = open(os.path.join(workdir, "sandbox.log"), "w")
    proc = subprocess.Popen(
        [amc_sync, "sandbox", "--listen", "127.0.0.1:0", "--job-pending-polls", "0",
         "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
         "--refresh-token", REFRESH_TOKEN],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    line = proc.stdout.readline()
    if not line:
        sys.exit("error: the sandbox did not start (see sandbox.log)")
    info = json.loads(line)
    return proc, info["base_url"]


def write_config(path, sandbox_url, listen_port):
    with open(path, "w") as f:
        f.write(f'''# AMC Sync tray e2e test (no secrets: credentials come from the environment)
api_base_url = "{sandbox_url}"
listen = "127.0.0.1:{listen_port}"

[schedule]
upload_interval_secs = 3600   # uploads happen on "upload now" only
batch_size = 10000

[[audiences]]
key = "vip"
advertiser_id = {ADVERTISER_ID}
country_code = "US"
description = "AMC Sync tray e2e test audience"
''')


def stop_group(proc, name):
    """Stops a process we started (its own session) by its process group id."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    except Exception as e:  # noqa: BLE001
        print(f"  (stopping {name}: {e!r})")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def screenshot(driver, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    try:
        driver.save_screenshot(path)
        print(f"  screenshot: {os.path.relpath(path, REPO)}")
    except WebDriverException as e:
        print(f"  (screenshot {name} failed: {e.msg})")


def testid_text(driver, tid):
    els = driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{tid}"]')
    return els[0].text.strip() if els else None


def send_batch(agent_url, write_key, emails):
    batch = []
    for i, email in enumerate(emails):
        batch.append({
            "type": "track", "userId": f"e2e_user_{i}", "event": "Audience Entered",
            "messageId": f"e2e-tray-{os.getpid()}-{email}",
            "timestamp": "2026-12-01T08:00:00Z",
            "properties": {"audience_key": "vip", "vip": True, "email": email},
            "context": {"personas": {"computation_key": "vip",
                                     "audience_settings": {"advertiserId": ADVERTISER_ID,
                                                           "countryCode": "US"}}},
        })
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    return http("POST", f"{agent_url}/v1/batch", {"batch": batch},
                headers={"Authorization": f"Basic {auth}"})


def received_count(sandbox_url):
    code, body = http("GET", f"{sandbox_url}/__sandbox/received")
    if code != 200 or not isinstance(body, dict):
        return 0
    return sum(len(v) for v in body.values())


# --- tray menu over D-Bus (StatusNotifierItem + com.canonical.dbusmenu) -------------------

def gdbus(*args, timeout=10):
    return subprocess.run(["gdbus", *args], capture_output=True, text=True, timeout=timeout)


def find_tray_menu():
    """Returns (bus name, menu object path) of our dbusmenu, or None."""
    if not shutil.which("gdbus"):
        return None
    r = gdbus("call", "--session", "--dest", "org.freedesktop.DBus", "--object-path",
              "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.ListNames")
    names = re.findall(r"'(:[0-9.]+)'", r.stdout)
    for name in names:
        for root in ("/org/ayatana/NotificationItem", "/StatusNotifierItem"):
            intro = gdbus("introspect", "--session", "--dest", name, "--object-path", root, "--recurse")
            if intro.returncode != 0 or "com.canonical.dbusmenu" not in intro.stdout:
                continue
            path = None
            for line in intro.stdout.splitlines():
                line = line.strip()
                if line.startswith("node "):
                    path = line.split()[1]
                if "interface com.canonical.dbusmenu" in line and path:
                    return name, path
    return None


def menu_items(bus, path):
    """The menu as an ordered list of (id, label, properties text), from GetLayout."""
    r = gdbus("call", "--session", "--dest", bus, "--object-path", path, "--method",
              "com.canonical.dbusmenu.GetLayout", "--", "0", "-1", "[]")
    out = []
    # Items look like: <(12, {'label': <'Upload now'>, ...}, @av [])>
    for m in re.finditer(r"\((\d+), \{([^{}]*)\}", r.stdout):
        label = re.search(r"'label': <'((?:[^'\\]|\\.)*)'>", m.group(2))
        if label:
            out.append((int(m.group(1)), label.group(1), m.group(2)))
    return out


def menu_label_ids(bus, path):
    return {label: i for i, label, _ in menu_items(bus, path)}


def menu_status_line(bus, path):
    """The first (disabled) item: the tray's status line."""
    items = menu_items(bus, path)
    return items[0][1] if items else ""


def menu_click(bus, path, item_id):
    r = gdbus("call", "--session", "--dest", bus, "--object-path", path, "--method",
              "com.canonical.dbusmenu.Event", "--", str(item_id), "clicked", "<0>", "0")
    return r.returncode == 0


def tray_icon_name(bus, path):
    """StatusNotifierItem IconName (a new temp file each time the icon is set)."""
    r = gdbus("call", "--session", "--dest", bus, "--object-path", path.rsplit("/", 1)[0],
              "--method", "org.freedesktop.DBus.Properties.Get", "org.kde.StatusNotifierItem", "IconName")
    return r.stdout.strip()


def tray_icon_path(bus, path):
    """The icon file the tray currently shows (from IconName), or None."""
    m = re.search(r"<'([^']+)'>", tray_icon_name(bus, path))
    return m.group(1) if m else None


def png_rgba(data):
    """Decodes an 8-bit, non-interlaced RGB/RGBA PNG (as tray-icon and gen_icons.py write
    them) into (width, height, bytes of RGBA rows). Standard library only."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = chunk
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    width, height = int.from_bytes(ihdr[0:4], "big"), int.from_bytes(ihdr[4:8], "big")
    depth, ctype, interlace = ihdr[8], ihdr[9], ihdr[12]
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, color type {ctype}, interlace {interlace})")
    bpp = 4 if ctype == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    out, prev, i = bytearray(), bytearray(stride), 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        if bpp == 4:
            out += line
        else:
            for x in range(0, stride, 3):
                out += line[x:x + 3] + b"\xff"
    return width, height, bytes(out)


def tray_icon_state(bus, path):
    """Which of src-tauri/icons/tray-<state>-64.png the tray shows (pixel-exact), or None."""
    icon = tray_icon_path(bus, path)
    if not icon:
        return None
    with open(icon, "rb") as f:
        shown = png_rgba(f.read())
    for state in ("ok", "working", "attention", "paused"):
        with open(os.path.join(SRC_TAURI, "icons", f"tray-{state}-64.png"), "rb") as f:
            if png_rgba(f.read()) == shown:
                return state
    return "unknown"


def menu_toggle_state(bus, path, label):
    """A check item's dbusmenu toggle-state (0/1), or None when the item is missing."""
    for _, lab, props in menu_items(bus, path):
        if lab == label:
            m = re.search(r"'toggle-state': <(-?\d+)>", props)
            return int(m.group(1)) if m else None
    return None


def proc_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.decode("utf-8", "replace").split("=", 1)
                    for kv in f.read().split(b"\0") if b"=" in kv)


def autostart_entries(home):
    d = os.path.join(home, ".config", "autostart")
    return sorted(n for n in os.listdir(d) if n.endswith(".desktop")) if os.path.isdir(d) else []


def main():
    amc_sync = find_bin("AMC_SYNC_BIN", os.path.join(REPO, "target", "debug", "amc-sync"))
    tray = find_bin("AMC_SYNC_TRAY_BIN", os.path.join(REPO, "target-tray", "debug", "amc-sync-tray"))
    driver_bin = os.environ.get("TAURI_DRIVER") or shutil.which("tauri-driver") \
        or os.path.expanduser("~/.cargo/bin/tauri-driver")
    if not os.path.exists(driver_bin):
        sys.exit("error: tauri-driver not found (cargo install tauri-driver --locked)")
    for port in (DRIVER_PORT, NATIVE_PORT):
        if port_in_use(port):
            sys.exit(f"error: port {port} is in use; tauri-driver needs 4444 and 4445 free")

    workdir = tempfile.mkdtemp(prefix="amc-sync-tray-e2e-")
    data_dir = os.path.join(workdir, "data")
    config = os.path.join(workdir, "config.toml")
    # The app's HOME (and XDG dirs): "Start at login" writes <HOME>/.config/autostart/ there
    # (auto-launch uses $HOME, not XDG_CONFIG_HOME), never in the real user's.
    fake_home = os.path.join(workdir, "home")
    real_autostart = autostart_entries(os.path.expanduser("~"))
    sandbox = driver_proc = driver = None
    app_pid = None
    try:
        sandbox, sandbox_url = start_sandbox(amc_sync, workdir)
        agent_port = free_port()
        agent_url = f"http://127.0.0.1:{agent_port}"
        write_config(config, sandbox_url, agent_port)
        print(f"sandbox {sandbox_url}; agent will listen on {agent_url}; workdir {workdir}", flush=True)

        for d in ("", ".config", ".cache", ".local/share"):
            os.makedirs(os.path.join(fake_home, d), exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("AMC_SYNC_CLIENT_ID", "AMC_SYNC_CLIENT_SECRET", "AMC_SYNC_REFRESH_TOKEN")}
        env.update({
            "AMC_SYNC_DATA_DIR": data_dir,  # the args below say the same
            "AMC_SYNC_CONFIG": config,
            "AMC_SYNC_SECRET_STORE": "file",  # 0600 file in the data dir; no keychain
            "HOME": fake_home,
            "XDG_CONFIG_HOME": os.path.join(fake_home, ".config"),
            "XDG_CACHE_HOME": os.path.join(fake_home, ".cache"),
            "XDG_DATA_HOME": os.path.join(fake_home, ".local", "share"),
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        })
        # Stored credentials (not the environment, which overrides a logout): the app logs
        # in from the data dir, and "Log out" can really remove them.
        login = subprocess.run(
            [amc_sync, "login", "--from-env", "--data-dir", data_dir, "--config", config, "--json"],
            env={**env, "AMC_SYNC_CLIENT_ID": CLIENT_ID, "AMC_SYNC_CLIENT_SECRET": CLIENT_SECRET,
                 "AMC_SYNC_REFRESH_TOKEN": REFRESH_TOKEN},
            capture_output=True, text=True, timeout=60)
        if login.returncode != 0:
            sys.exit(f"error: amc-sync login --from-env failed ({login.returncode}): "
                     f"{login.stdout.strip()} {login.stderr.strip()}")
        print(f"login --from-env: {login.stdout.strip()}", flush=True)
        driver_log = open(os.path.join(workdir, "tauri-driver.log"), "w")
        driver_proc = subprocess.Popen(
            ["timeout", "-k", "10", os.environ.get("E2E_TIMEOUT", "300"), driver_bin,
             "--port", str(DRIVER_PORT), "--native-port", str(NATIVE_PORT)],
            stdout=driver_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if not wait_for("tauri-driver", lambda: port_in_use(DRIVER_PORT), timeout=20):
            sys.exit("error: tauri-driver did not start (see tauri-driver.log)")

        opts = ArgOptions()
        opts.set_capability("browserName", "wry")
        opts.set_capability("tauri:options", {
            "application": tray,
            "args": ["--data-dir", data_dir, "--config", config],
        })
        started = time.time()
        driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{DRIVER_PORT}", options=opts)
        driver.set_page_load_timeout(30)
        check("window opens (WebDriver session on the tray app)", True,
              f"{time.time() - started:.1f} s")

        url = wait_for("the dashboard URL", lambda: driver.current_url.startswith(agent_url) and driver.current_url,
                       timeout=30)
        check("window loads the agent's URL", bool(url), str(url or driver.current_url).split("#")[0])

        state = wait_for("agent.json listenUrl", lambda: (lambda s: s if s.get("listenUrl") else None)(
            json.load(open(os.path.join(data_dir, "agent.json")))), timeout=20) or {}
        token = state.get("adminToken", "")
        write_key = state.get("writeKey", "")
        app_pid = state.get("pid")
        check("in-process agent recorded in agent.json", state.get("listenUrl") == agent_url,
              f"listenUrl={state.get('listenUrl')} pid={app_pid}")
        code, _ = http("GET", f"{agent_url}/healthz")
        check("agent /healthz", code == 200, f"HTTP {code}")
        code, status = http("GET", f"{agent_url}/api/status", headers={"Authorization": f"Bearer {token}"})
        check("agent /api/status with the admin token", code == 200 and isinstance(status, dict),
              f"HTTP {code} auth={status.get('auth') if isinstance(status, dict) else None}")

        code, page = http("GET", f"{agent_url}/")
        dashboard_served = code == 200 and isinstance(page, str) and "data-testid" in page
        if not dashboard_served:
            record("dashboard served by the agent", "skipped",
                   f"GET / -> HTTP {code}: the agent does not serve ui/ yet; UI checks skipped")
        screenshot(driver, "01-window-opened.png")

        # Live status in the dashboard.
        if dashboard_served:
            auth = wait_for("auth-state", lambda: testid_text(driver, "auth-state"), timeout=30)
            check("dashboard shows auth-state", bool(auth), repr(auth))
            pending0 = wait_for("pending-total", lambda: testid_text(driver, "pending-total"), timeout=30)
            check("dashboard shows pending-total", pending0 is not None, repr(pending0))

        # Segment batch -> queued.
        emails = [f"e2e.tray.{i}@example.com" for i in range(3)]
        code, body = send_batch(agent_url, write_key, emails)
        check("Segment batch accepted by the in-process agent", code == 200, f"HTTP {code} {body}")
        if dashboard_served:
            pending = wait_for("pending-total > 0",
                               lambda: (lambda t: t if t and any(ch.isdigit() for ch in t) and
                                        int("".join(ch for ch in t if ch.isdigit())) > 0 else None)(
                                   testid_text(driver, "pending-total")), timeout=30)
            check("dashboard shows the queued records (live)", bool(pending), repr(pending))
            screenshot(driver, "02-queued.png")

            before = received_count(sandbox_url)
            buttons = driver.find_elements(By.CSS_SELECTOR, '[data-testid="upload-now"]')
            if check("dashboard has an upload-now button", bool(buttons)):
                buttons[0].click()
                got = wait_for("sandbox received records", lambda: received_count(sandbox_url) > before,
                               timeout=60)
                check("upload-now button reaches the core: the sandbox received the records",
                      bool(got), f"{received_count(sandbox_url)} records at the sandbox")
                drained = wait_for("pending-total back to 0",
                                   lambda: (testid_text(driver, "pending-total") or "").strip() in ("0",),
                                   timeout=30)
                check("dashboard shows the queue drained", bool(drained),
                      repr(testid_text(driver, "pending-total")))
                screenshot(driver, "03-uploaded.png")

        # Tray menu over D-Bus (the tray's own actions -> admin API). Linux trays have no
        # tooltip: the menu's first item is the status line.
        auth_hdr = {"Authorization": f"Bearer {token}"}
        found = wait_for("tray menu on the session bus", find_tray_menu, timeout=10)
        tray_menu = None
        if not found:
            record("tray menu on D-Bus", "skipped", "no dbusmenu exported (no session bus?)")
        else:
            bus, path = found
            tray_menu = found
            ids = menu_label_ids(bus, path)
            check("tray menu items", all(k in ids for k in (
                "Open dashboard", "Upload now", "Pause uploads", "Open drop folder", "Region", "NA",
                "EU", "FE", "Log out", "Start at login", "Quit AMC Sync")), ", ".join(ids))
            line = wait_for("status line 'Up to date'", lambda: menu_status_line(bus, path).startswith(
                "Up to date"), timeout=10)
            check("tray status line follows the agent (ok)", bool(line), repr(menu_status_line(bus, path)))

            code, _ = send_batch(agent_url, write_key, [f"e2e.tray.menu.{i}@example.com" for i in range(2)])
            line = wait_for("status line '2 queued'", lambda: "2 queued" in menu_status_line(bus, path),
                            timeout=10)
            check("tray status line shows the queued records", bool(line), repr(menu_status_line(bus, path)))
            before = received_count(sandbox_url)
            menu_click(bus, path, ids["Upload now"])
            got = wait_for("sandbox received the menu upload",
                           lambda: received_count(sandbox_url) > before, timeout=60)
            check("tray menu 'Upload now' reaches the core (POST /api/flush)", bool(got),
                  f"{received_count(sandbox_url)} records at the sandbox")

            icon_before = tray_icon_name(bus, path)
            menu_click(bus, path, ids["Pause uploads"])
            paused = wait_for("paused", lambda: http("GET", f"{agent_url}/api/status",
                                                     headers=auth_hdr)[1].get("paused") is True, timeout=10)
            check("tray menu 'Pause uploads' pauses the agent (POST /api/pause)", bool(paused))
            relabel = wait_for("'Resume uploads' label",
                               lambda: "Resume uploads" in menu_label_ids(bus, path), timeout=10)
            check("pause item toggles to 'Resume uploads'", bool(relabel),
                  f"status line {menu_status_line(bus, path)!r}")
            icon_after = wait_for("icon change", lambda: (lambda n: n if n != icon_before else None)(
                tray_icon_name(bus, path)), timeout=10)
            check("tray icon changes when paused", bool(icon_after), f"{icon_before} -> {icon_after}")
            if dashboard_served:
                time.sleep(2.5)  # the dashboard polls too
                screenshot(driver, "04-paused-from-tray.png")
            ids = menu_label_ids(bus, path)
            if "Resume uploads" in ids:
                menu_click(bus, path, ids["Resume uploads"])
                resumed = wait_for("resumed", lambda: http("GET", f"{agent_url}/api/status",
                                                           headers=auth_hdr)[1].get("paused") is False,
                                   timeout=10)
                check("tray menu 'Resume uploads' resumes (POST /api/resume)", bool(resumed))

            # Region submenu -> PUT /api/region (skipped while the agent lacks the route).
            code, body = http("GET", f"{agent_url}/api/region", headers=auth_hdr)
            if not (code == 200 and isinstance(body, dict) and "region" in body):
                record("tray menu Region -> PUT /api/region", "skipped",
                       f"GET /api/region -> HTTP {code}: the agent has no region route yet")
            else:
                ids = menu_label_ids(bus, path)
                menu_click(bus, path, ids["EU"])
                eu = wait_for("region EU", lambda: http("GET", f"{agent_url}/api/status",
                                                        headers=auth_hdr)[1].get("region") == "EU", timeout=10)
                checked = wait_for("EU checked", lambda: any(
                    label == "EU" and "'toggle-state': <1>" in props
                    for _, label, props in menu_items(bus, path)), timeout=10)
                check("tray menu Region 'EU' switches the agent's region (PUT /api/region)",
                      bool(eu) and bool(checked), f"status line {menu_status_line(bus, path)!r}")
                menu_click(bus, path, menu_label_ids(bus, path)["NA"])
                wait_for("region NA", lambda: http("GET", f"{agent_url}/api/status",
                                                   headers=auth_hdr)[1].get("region") == "NA", timeout=10)

        if not dashboard_served:
            # Without the dashboard, still prove the in-process agent uploads to the sandbox.
            before = received_count(sandbox_url)
            code, _ = http("POST", f"{agent_url}/api/flush?wait=true&timeout=60",
                           headers={"Authorization": f"Bearer {token}"}, timeout=90)
            check("in-process agent uploads to the sandbox (admin flush)",
                  received_count(sandbox_url) > before or received_count(sandbox_url) > 0,
                  f"HTTP {code}, {received_count(sandbox_url)} records at the sandbox")
        screenshot(driver, "05-final.png")

        # Single instance: a second launch exits at once and leaves the first (and its agent).
        second = subprocess.run([tray, "--data-dir", data_dir, "--config", config], env=env,
                                capture_output=True, text=True, timeout=60)
        st = json.load(open(os.path.join(data_dir, "agent.json")))
        code, _ = http("GET", f"{agent_url}/healthz")
        check("a second launch exits and the first instance keeps its agent",
              second.returncode == 0 and pid_alive(app_pid) and st.get("pid") == app_pid and code == 200,
              f"second exit={second.returncode}, first alive={pid_alive(app_pid)}, healthz={code}")

        if tray_menu:
            bus, path = tray_menu

            # Log out from the tray menu -> POST /api/logout: the stored credentials go, the
            # connection says no_credentials, the item turns into "Log in…", the icon amber.
            def connection():
                code, body = http("GET", f"{agent_url}/api/connection", headers=auth_hdr)
                return body if code == 200 and isinstance(body, dict) else {}

            # The tray picks log out vs log in from its last poll: wait until it shows "Log out".
            ready = wait_for("logged in and 'Log out' in the menu", lambda: http(
                "GET", f"{agent_url}/api/status", headers=auth_hdr)[1].get("auth") == "ok"
                and "Log out" in menu_label_ids(bus, path), timeout=15)
            conn0 = connection()
            if not check("logged in from the data dir before 'Log out'", bool(ready) and
                         conn0.get("state") == "ok" and conn0.get("secretStore") == "file",
                         f"state={conn0.get('state')} secretStore={conn0.get('secretStore')}"):
                record("tray menu 'Log out'", "skipped", "not logged in with stored credentials")
            else:
                icon_before = tray_icon_state(bus, path)
                menu_click(bus, path, menu_label_ids(bus, path)["Log out"])
                out = wait_for("connection no_credentials",
                               lambda: connection().get("state") == "no_credentials", timeout=15)
                conn1 = connection()
                check("tray menu 'Log out' logs out (GET /api/connection: no_credentials)", bool(out),
                      f"state={conn1.get('state')} clientId={conn1.get('clientId')} "
                      f"secretStore={conn1.get('secretStore')}")
                relabel = wait_for("'Log in…' label", lambda: (lambda ids: "Log in…" in ids and
                                                               "Log out" not in ids)(
                    menu_label_ids(bus, path)), timeout=10)
                check("auth item turns into 'Log in…'", bool(relabel),
                      f"status line {menu_status_line(bus, path)!r}")
                amber = wait_for("attention icon", lambda: tray_icon_state(bus, path) == "attention",
                                 timeout=10)
                st = http("GET", f"{agent_url}/api/status", headers=auth_hdr)[1]
                check("tray state becomes attention (amber icon) after 'Log out'",
                      bool(amber) and st.get("auth") == "no_credentials",
                      f"icon {icon_before} -> {tray_icon_state(bus, path)}, status auth={st.get('auth')}")
                if dashboard_served:
                    time.sleep(2.5)  # the dashboard polls too
                    screenshot(driver, "06-logged-out-from-tray.png")

            # Start at login: the check item toggles and <HOME>/.config/autostart/<app>.desktop
            # comes and goes. Only clicked when the app really runs with the temp HOME.
            app_home = None
            try:
                app_home = proc_environ(app_pid).get("HOME") if app_pid else None
            except OSError as e:
                print(f"  (reading the app's environment: {e!r})")
            if app_home != fake_home:
                record("tray menu 'Start at login'", "failed",
                       f"the app's HOME is {app_home!r}, not the test's {fake_home!r}: not clicked")
            else:
                label = "Start at login"
                check("'Start at login' starts unchecked (no autostart entry in the temp HOME)",
                      menu_toggle_state(bus, path, label) == 0 and not autostart_entries(fake_home),
                      f"toggle-state={menu_toggle_state(bus, path, label)} "
                      f"entries={autostart_entries(fake_home)}")
                menu_click(bus, path, menu_label_ids(bus, path)[label])
                on = wait_for("autostart on", lambda: menu_toggle_state(bus, path, label) == 1
                              and autostart_entries(fake_home), timeout=10)
                # The notice reaches the status line at the next poll (every 2 s).
                said_on = wait_for("'will start at login' notice", lambda: menu_status_line(
                    bus, path) == "AMC Sync will start at login", timeout=6)
                entries = autostart_entries(fake_home)
                exec_line = ""
                if entries:
                    with open(os.path.join(fake_home, ".config", "autostart", entries[0])) as f:
                        exec_line = next((ln for ln in f.read().splitlines()
                                          if ln.startswith("Exec=")), "")
                check("tray menu 'Start at login' checks the item and writes the autostart entry",
                      bool(on) and len(entries) == 1 and tray in exec_line and "--hidden" in exec_line
                      and bool(said_on),
                      f"toggle-state={menu_toggle_state(bus, path, label)} entries={entries} "
                      f"{exec_line!r}; status line {menu_status_line(bus, path)!r}")
                menu_click(bus, path, menu_label_ids(bus, path)[label])
                off = wait_for("autostart off", lambda: menu_toggle_state(bus, path, label) == 0
                               and not autostart_entries(fake_home), timeout=10)
                said_off = wait_for("'will not start at login' notice", lambda: menu_status_line(
                    bus, path) == "AMC Sync will not start at login", timeout=6)
                check("'Start at login' again unchecks the item and removes the entry",
                      bool(off) and bool(said_off), f"toggle-state={menu_toggle_state(bus, path, label)} "
                      f"entries={autostart_entries(fake_home)}; "
                      f"status line {menu_status_line(bus, path)!r}")
            check("the real user's ~/.config/autostart is untouched",
                  autostart_entries(os.path.expanduser("~")) == real_autostart,
                  f"{real_autostart} -> {autostart_entries(os.path.expanduser('~'))}")

        # Quit from the tray menu (else SIGTERM, the same shutdown path): the in-process
        # agent's serve() returns, agent.json loses its pid, then the app exits.
        how = "tray menu 'Quit AMC Sync'"
        if tray_menu and "Quit AMC Sync" in menu_label_ids(*tray_menu):
            menu_click(*tray_menu, menu_label_ids(*tray_menu)["Quit AMC Sync"])
        elif app_pid:
            how = "SIGTERM"
            os.kill(app_pid, signal.SIGTERM)
        gone = wait_for("the app to exit", lambda: not pid_alive(app_pid), timeout=30) if app_pid else None
        st = json.load(open(os.path.join(data_dir, "agent.json")))
        check(f"{how} stops the agent cleanly, then the app exits",
              bool(gone) and "pid" not in st and "listenUrl" not in st,
              f"exited={bool(gone)} agent.json keys={sorted(st)}")
        try:
            driver.quit()
        except WebDriverException:
            pass
        driver = None
        # A config error: the window explains it instead of showing the dashboard.
        bad_config = os.path.join(workdir, "bad.toml")
        with open(bad_config, "w") as f:
            f.write("listen = 12\n")
        opts = ArgOptions()
        opts.set_capability("browserName", "wry")
        opts.set_capability("tauri:options", {
            "application": tray,
            "args": ["--data-dir", os.path.join(workdir, "data-bad"), "--config", bad_config],
        })
        driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{DRIVER_PORT}", options=opts)
        msg = wait_for("startup-error", lambda: testid_text(driver, "startup-error"), timeout=20)
        check("a config error is shown in the window", bool(msg) and "bad.toml:1" in msg, repr(msg))
        screenshot(driver, "07-startup-error.png")
        try:
            driver.quit()
        except WebDriverException:
            pass
        driver = None
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        record("e2e run", "failed", repr(e))
        if driver is not None:
            screenshot(driver, "error.png")
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001
                pass
        stop_group(driver_proc, "tauri-driver")
        if app_pid and pid_alive(app_pid):
            os.kill(app_pid, signal.SIGKILL)
        stop_group(sandbox, "sandbox")
        for name in ("tauri-driver.log", "sandbox.log"):
            p = os.path.join(workdir, name)
            if os.path.exists(p):
                os.makedirs(ARTIFACTS, exist_ok=True)
                shutil.copy(p, os.path.join(ARTIFACTS, name))
        logs = os.path.join(data_dir, "logs")
        if os.path.isdir(logs):
            for n in os.listdir(logs):
                shutil.copy(os.path.join(logs, n), os.path.join(ARTIFACTS, n))
        if os.environ.get("E2E_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)

    passed = sum(1 for r in RESULTS if r[1] == "passed")
    failed = sum(1 for r in RESULTS if r[1] == "failed")
    skipped = sum(1 for r in RESULTS if r[1] == "skipped")
    print(f"tray-e2e: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
