//! End-to-end ingest benchmark of the REAL release binary (DESIGN.md 5):
//!
//! 1. **Folder/file ingest**: generates N Engage `track` events (default
//!    1,000,000; 5 PII fields each: email, first/last name, phone, postal;
//!    US/GB/DE, enter/exit, six audiences created from `audience_settings`,
//!    one distinct user per event) into an NDJSON file, runs
//!    `amc-sync ingest FILE --json --data-dir TMP` and reports events/s and
//!    the child's peak RSS (`wait4` rusage). Target ≥ 300,000 events/s,
//!    peak RSS ≤ 100 MB.
//! 2. **HTTP ingest**: starts `amc-sync run --listen 127.0.0.1:0
//!    --no-drop-folder`, then 16 client threads POST `/v1/batch` with 100
//!    events each over keep-alive HTTP/1.1 until N events are acknowledged;
//!    reports events/s, p50/p99 request latency and the agent's peak RSS
//!    (`VmHWM`). Target ≥ 100,000 events/s, p99 ≤ 50 ms.
//!
//! Run (the binary is NOT built by this bench):
//!
//! ```text
//! cargo build --release && cargo bench --bench ingest
//! ```
//!
//! Environment: `AMC_SYNC_BIN` (binary path, default
//! `target/release/amc-sync`), `AMC_SYNC_BENCH_EVENTS` (events per phase,
//! default 1,000,000), `AMC_SYNC_BENCH_CLIENTS` (default 16),
//! `AMC_SYNC_BENCH_BATCH` (events per request, default 100),
//! `AMC_SYNC_BENCH_PHASES` (`folder,http` by default), `AMC_SYNC_BENCH_WRITE`
//! (a path: only write the NDJSON input there and exit, for profiling).
//! The report goes to `bench-report/ingest.json`.

use std::fmt::Write as _;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const FIRST: &[&str] = &[
    "John", "Jürgen", "Marie", "Øyvind", "José", "Anna", "Oliver", "Sophie", "Lukas", "Emily",
];
const LAST: &[&str] = &[
    "Doe",
    "Müller",
    "Smith",
    "O'Connor",
    "Schröder",
    "Brown",
    "Weiß",
    "Taylor",
    "Jones",
    "Koch",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "Gmail.com",
    "web.de",
    "example.co.uk",
    "mail.org",
];

/// (country, audiences) per market; every audience has `audience_settings`.
const MARKETS: &[(&str, [&str; 2])] = &[
    ("US", ["us_buyers", "us_churn_risk"]),
    ("GB", ["gb_loyal", "gb_cart_abandoners"]),
    ("DE", ["de_newsletter", "de_high_value"]),
];

/// Deterministic 64-bit mix (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Appends event `i` (one JSON object, no newline) to `out`. Deterministic;
/// `tag` keeps user ids and messageIds of different phases apart.
fn event(out: &mut String, i: u64, tag: &str) {
    let r = mix(i);
    let (cc, auds) = MARKETS[(r % 3) as usize];
    let aud = auds[((r >> 8) & 1) as usize];
    let entered = !(r >> 9).is_multiple_of(4); // 75 % enter, 25 % exit
    let event = if entered {
        "Audience Entered"
    } else {
        "Audience Exited"
    };
    let first = FIRST[((r >> 12) % FIRST.len() as u64) as usize];
    let last = LAST[((r >> 20) % LAST.len() as u64) as usize];
    let domain = DOMAINS[((r >> 28) % DOMAINS.len() as u64) as usize];
    let n4 = (r >> 32) % 10_000;
    let n3 = (r >> 44) % 1_000;
    let (phone, postal) = match cc {
        "US" => (
            format!("(415) 555-{n4:04}"),
            format!("{:05}-{n4:04}", (r >> 40) % 100_000),
        ),
        "GB" => (
            format!("020 7946 {n4:04}"),
            format!("SW{} {}AA", 1 + n3 % 20, n3 % 10),
        ),
        _ => (
            format!("030 {n4:04}{n3:03}"),
            format!("{:05}", 10_000 + (r >> 40) % 89_999),
        ),
    };
    let consent = if cc == "US" {
        ""
    } else {
        r#","amznAdStorage":"GRANTED","amznUserData":"GRANTED""#
    };
    let secs = i % 86_400;
    let _ = write!(
        out,
        r#"{{"type":"track","event":"{event}","userId":"{tag}{i:09}","messageId":"personas_{tag}{i:016x}","timestamp":"2026-11-01T{:02}:{:02}:{:02}Z","properties":{{"audience_key":"{aud}","{aud}":{entered},"first_name":"{first}","last_name":"{last}","phone":"{phone}","postal":"{postal}"{consent}}},"context":{{"traits":{{"email":"{}.{}{i}@{domain}"}},"personas":{{"computation_class":"audience","computation_key":"{aud}","namespace":"spa_bench","space_id":"spa_bench","audience_settings":{{"advertiserId":"585806696618602999","countryCode":"{cc}","description":"Benchmark audience"}}}}}},"integrations":{{"All":false,"Amazon Ads DSP and AMC":true}}}}"#,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        first.to_lowercase(),
        last.to_lowercase(),
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AMC_SYNC_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("release").join("amc-sync")
}

/// Peak RSS and CPU of a finished child, from `wait4`.
struct ChildUsage {
    status: i32,
    max_rss_kib: i64,
    cpu_secs: f64,
}

fn wait_child(pid: u32) -> ChildUsage {
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value; `wait4` fills it in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped; both pointers are valid.
    let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid as libc::pid_t, "wait4 failed");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    ChildUsage {
        status,
        max_rss_kib: ru.ru_maxrss,
        cpu_secs: tv(ru.ru_utime) + tv(ru.ru_stime),
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at index 11 and 12 after the ')'.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Writes events `0..n` as NDJSON to `file`.
fn write_events(file: &Path, n: u64) {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(file).expect("file"));
    let mut line = String::with_capacity(1024);
    for i in 0..n {
        line.clear();
        event(&mut line, i, "uf");
        line.push('\n');
        w.write_all(line.as_bytes()).expect("write");
    }
    w.flush().expect("flush");
}

// The child is reaped with `wait4` (for its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn folder_phase(bin: &Path, n: u64) -> Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("engage-bench.ndjson");
    let t0 = Instant::now();
    write_events(&file, n);
    let bytes = std::fs::metadata(&file).expect("metadata").len();
    eprintln!(
        "folder: generated {n} events ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let data = tmp.path().join("data");
    let t = Instant::now();
    let child = Command::new(bin)
        .arg("ingest")
        .arg(&file)
        .arg("--json")
        .arg("--data-dir")
        .arg(&data)
        .env_remove("AMC_SYNC_CONFIG")
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn amc-sync ingest");
    let pid = child.id();
    let mut stdout = child.stdout.expect("stdout");
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read stdout");
    let usage = wait_child(pid);
    let secs = t.elapsed().as_secs_f64();
    let summary: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let f = &summary["files"][0];
    let queued = f["queued"].as_u64().unwrap_or(0);
    let ok = usage.status == 0 && f["status"] == "done" && f["received"].as_u64() == Some(n);
    if !ok {
        eprintln!(
            "folder: amc-sync ingest failed (wait status {}): {out}",
            usage.status
        );
    }
    let rate = n as f64 / secs;
    eprintln!(
        "folder: {n} events in {secs:.2} s = {rate:.0} events/s; queued {queued}, dead letters {}; peak RSS {:.1} MB; CPU {:.2} s ({:.2} cores)",
        f["deadLetters"],
        usage.max_rss_kib as f64 / 1024.0,
        usage.cpu_secs,
        usage.cpu_secs / secs
    );
    json!({
        "ok": ok,
        "events": n,
        "fileBytes": bytes,
        "seconds": secs,
        "eventsPerSec": rate,
        "targetEventsPerSec": 300_000,
        "peakRssMb": usage.max_rss_kib as f64 / 1024.0,
        "targetPeakRssMb": 100,
        "cpuSeconds": usage.cpu_secs,
        "queued": queued,
        "coalesced": f["coalesced"],
        "stale": f["stale"],
        "deadLetters": f["deadLetters"],
    })
}

struct Agent {
    pid: u32,
    addr: String,
    write_key: String,
}

// The child is reaped with `wait4` in `http_phase`.
#[allow(clippy::zombie_processes)]
fn start_agent(bin: &Path, data: &Path) -> Agent {
    let child = Command::new(bin)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--no-drop-folder",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("AMC_SYNC_CONFIG")
        .env("HOME", data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn amc-sync run");
    let pid = child.id();
    drop(child); // reaped with wait4 in stop_agent
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(data.join("agent.json")) {
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if let (Some(url), Some(p)) = (v["listenUrl"].as_str(), v["pid"].as_u64())
                && p == u64::from(pid)
            {
                let addr = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                let write_key = v["writeKey"].as_str().unwrap_or_default().to_string();
                return Agent {
                    pid,
                    addr,
                    write_key,
                };
            }
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One keep-alive HTTP/1.1 connection speaking just enough of the protocol.
struct Client {
    addr: String,
    auth: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr)?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
            }
            match self.exchange(path, body) {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 => {
                    eprintln!("http: connection error ({e}), reconnecting");
                    self.stream = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    fn exchange(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let s = self.stream.as_mut().expect("connected");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.auth,
            body.len()
        );
        let mut req = Vec::with_capacity(head.len() + body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(body);
        s.write_all(&req)?;
        self.buf.clear();
        let mut tmp = [0u8; 4096];
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
        let header_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let k = s.read(&mut tmp)?;
            if k == 0 {
                return Err(eof());
            }
            self.buf.extend_from_slice(&tmp[..k]);
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = None;
        let mut close = false;
        for l in head.lines() {
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            } else if lower.starts_with("transfer-encoding:") {
                return Err(std::io::Error::other("chunked responses are not supported"));
            }
        }
        let len = len.ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
        while self.buf.len() < header_end + len {
            let k = s.read(&mut tmp)?;
            if k == 0 {
                return Err(eof());
            }
            self.buf.extend_from_slice(&tmp[..k]);
        }
        let body = self.buf[header_end..header_end + len].to_vec();
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[idx]) / 1000.0
}

fn http_phase(bin: &Path, n: u64, clients: u64, batch: u64) -> Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let agent = start_agent(bin, &data);
    let base_rss = proc_status_kib(agent.pid, "VmRSS:").unwrap_or(0);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:", agent.write_key));
    let batches = n.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let next = Arc::clone(&next);
            let failures = Arc::clone(&failures);
            let mut client = Client {
                addr: agent.addr.clone(),
                auth: auth.clone(),
                stream: None,
                buf: Vec::with_capacity(8192),
            };
            std::thread::spawn(move || {
                let mut lat: Vec<u32> = Vec::new();
                let mut body = String::with_capacity(128 * 1024);
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        break;
                    }
                    body.clear();
                    body.push_str(r#"{"batch":["#);
                    let end = ((b + 1) * batch).min(n);
                    for i in b * batch..end {
                        if i > b * batch {
                            body.push(',');
                        }
                        event(&mut body, i, "uh");
                    }
                    body.push_str("]}");
                    let mut tries = 0;
                    loop {
                        let s = Instant::now();
                        let r = client.post("/v1/batch", body.as_bytes());
                        let us = u32::try_from(s.elapsed().as_micros()).unwrap_or(u32::MAX);
                        match r {
                            Ok((200, _)) => {
                                lat.push(us);
                                break;
                            }
                            Ok((code, resp)) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                eprintln!(
                                    "http: status {code}: {}",
                                    String::from_utf8_lossy(&resp)
                                );
                            }
                            Err(e) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                eprintln!("http: {e}");
                            }
                        }
                        tries += 1;
                        assert!(tries < 5, "batch {b} failed 5 times");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    for h in handles {
        lat.extend(h.join().expect("client thread"));
    }
    let secs = t.elapsed().as_secs_f64();
    let peak = proc_status_kib(agent.pid, "VmHWM:").unwrap_or(0);
    let cpu = proc_cpu_secs(agent.pid).unwrap_or(0.0);
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(agent.pid as libc::pid_t, libc::SIGTERM) };
    let usage = wait_child(agent.pid);
    lat.sort_unstable();
    let rate = n as f64 / secs;
    let (p50, p99, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    let failures = failures.load(Ordering::Relaxed);
    eprintln!(
        "http: {n} events ({batches} requests x {batch}, {clients} clients) in {secs:.2} s = {rate:.0} events/s; latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; failures {failures}; agent peak RSS {:.1} MB (idle {:.1} MB); agent CPU {cpu:.2} s ({:.2} cores)",
        mb(peak),
        mb(base_rss),
        cpu / secs
    );
    json!({
        "ok": failures == 0 && usage.status == 0,
        "events": n,
        "requests": batches,
        "batchSize": batch,
        "clients": clients,
        "seconds": secs,
        "eventsPerSec": rate,
        "targetEventsPerSec": 100_000,
        "latencyMs": {"p50": p50, "p99": p99, "max": max},
        "targetP99Ms": 50,
        "failedRequests": failures,
        "agentPeakRssMb": mb(peak),
        "agentIdleRssMb": mb(base_rss),
        "agentCpuSeconds": cpu,
        "agentExitStatus": usage.status,
    })
}

fn main() {
    let n = env_u64("AMC_SYNC_BENCH_EVENTS", 1_000_000).max(1);
    let clients = env_u64("AMC_SYNC_BENCH_CLIENTS", 16).max(1);
    let batch = env_u64("AMC_SYNC_BENCH_BATCH", 100).max(1);
    let phases = std::env::var("AMC_SYNC_BENCH_PHASES").unwrap_or_else(|_| "folder,http".into());
    if let Some(out) = std::env::var_os("AMC_SYNC_BENCH_WRITE") {
        // Only write the input file (for profiling the binary by hand).
        write_events(Path::new(&out), n);
        eprintln!("wrote {n} events to {}", Path::new(&out).display());
        return;
    }
    let bin = binary();
    if !bin.is_file() {
        eprintln!(
            "{} not found: run `cargo build --release` first (or set AMC_SYNC_BIN)",
            bin.display()
        );
        std::process::exit(2);
    }
    eprintln!("binary: {}; {n} events per phase", bin.display());
    let mut report = json!({
        "benchmark": "ingest",
        "binary": bin.display().to_string(),
        "events": n,
        "cpus": std::thread::available_parallelism().map_or(0, |p| p.get()),
        "unixTime": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    if phases.contains("folder") {
        report["folder"] = folder_phase(&bin, n);
    }
    if phases.contains("http") {
        report["http"] = http_phase(&bin, n, clients, batch);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-report");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("ingest.json");
    let text = serde_json::to_string_pretty(&report).expect("json");
    match std::fs::write(&path, format!("{text}\n")) {
        Ok(()) => eprintln!("report: {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    println!("{text}");
}
