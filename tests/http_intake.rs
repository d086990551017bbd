//! The Segment-compatible HTTP intake end to end: a real server on a loopback
//! port (`axum::serve`), a real SQLite file behind the group-commit writer,
//! and real HTTP/1.1 requests from a minimal client written here.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use amc_sync::agent::pipeline::Pipeline;
use amc_sync::config::Config;
use amc_sync::ingest::http::{self, HttpState, MAX_BATCH_ITEMS, MAX_MESSAGE_BYTES};
use amc_sync::store::{DeadLetter, DeadLetterFilter, Store, Writer, WriterHandle};
use base64::Engine as _;
use serde_json::{Value, json};

const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    writer: Option<Writer>,
    handle: WriterHandle,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("amc-sync.db")).expect("open store");
        let writer = Writer::spawn(store).expect("writer");
        let handle = writer.handle();
        let pipeline = Pipeline::new(&Config::default(), writer.handle()).expect("pipeline");
        let app = http::router(HttpState {
            pipeline: Arc::new(pipeline),
            write_key: KEY.into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Server {
            addr,
            dir,
            writer: Some(writer),
            handle,
        }
    }

    async fn pending(&self) -> BTreeMap<String, u64> {
        let h = self.handle.clone();
        tokio::task::spawn_blocking(move || h.call(|s| s.pending_counts()))
            .await
            .expect("join")
            .expect("pending counts")
    }

    async fn pending_total(&self) -> u64 {
        self.pending().await.values().sum()
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        let h = self.handle.clone();
        tokio::task::spawn_blocking(move || {
            h.call(|s| {
                s.dead_letters(&DeadLetterFilter {
                    limit: 10_000,
                    ..DeadLetterFilter::default()
                })
            })
        })
        .await
        .expect("join")
        .expect("dead letters")
    }

    async fn dead_letter_reasons(&self) -> Vec<String> {
        self.dead_letters()
            .await
            .into_iter()
            .map(|d| d.reason)
            .collect()
    }

    /// Stops the writer: later submissions fail with `WriterClosed`.
    async fn stop_writer(&mut self) {
        let w = self.writer.take().expect("writer running");
        tokio::task::spawn_blocking(move || w.shutdown().expect("shutdown"))
            .await
            .expect("join");
    }

    /// Bytes of the database file and its WAL (if present).
    fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for name in ["amc-sync.db", "amc-sync.db-wal"] {
            if let Ok(b) = std::fs::read(self.dir.path().join(name)) {
                all.extend_from_slice(&b);
            }
        }
        all
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn assert_success(&self) {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.json(), json!({"success": true}));
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].is_string(), "{v}");
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.head
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), sent
/// by a blocking client on a blocking thread (tokio's `io-util` is not
/// enabled in this crate).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || blocking_request(addr, &head, &body))
        .await
        .expect("join")
}

fn blocking_request(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let body = out[split + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the test client does not decode chunked bodies"
    );
    Reply { status, head, body }
}

fn basic(user_pass: &str) -> (&'static str, String) {
    (
        "Authorization",
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ),
    )
}

fn json_ct() -> (&'static str, String) {
    ("Content-Type", "application/json".to_string())
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(
        addr,
        "POST",
        path,
        &[basic(&format!("{KEY}:")), json_ct()],
        &serde_json::to_vec(body).expect("json"),
    )
    .await
}

/// An Engage audience track event whose audience is created from
/// `audience_settings`.
fn engage(user: &str, key: &str, entered: bool, email: &str) -> Value {
    json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "userId": user,
        "messageId": format!("m-{user}-{key}-{entered}"),
        "timestamp": "2026-11-01T00:00:00Z",
        "properties": {"audience_key": key, key: entered},
        "context": {"traits": {"email": email}, "personas": {"computation_key": key,
            "audience_settings": {"advertiserId": "585806696618602999", "countryCode": "US"}}}
    })
}

fn batch_of(n: usize, key: &str) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| engage(&format!("u{i}"), key, true, &format!("user{i}@example.com")))
        .collect();
    json!({"batch": items})
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

// `GET /healthz` moved to the admin API (loopback Host check): see
// tests/admin_api.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_basic_auth_is_committed_before_200() {
    let s = Server::start().await;
    let mut body = batch_of(10, "vip");
    body["sentAt"] = json!("2026-11-01T00:00:01Z");
    let r = post(s.addr, "/v1/batch", &body).await;
    r.assert_success();
    // The answer came after the commit: the rows are there now.
    assert_eq!(s.pending().await.get("vip"), Some(&10));
    // /v1/import behaves the same.
    post(s.addr, "/v1/import", &batch_of(3, "imported"))
        .await
        .assert_success();
    assert_eq!(s.pending().await.get("imported"), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_write_key_and_basic_auth_without_colon_are_accepted() {
    let s = Server::start().await;
    // The Python SDK: body writeKey, no Authorization header required.
    let mut body = batch_of(2, "body_key");
    body["writeKey"] = json!(KEY);
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[json_ct()],
        &serde_json::to_vec(&body).expect("json"),
    )
    .await;
    r.assert_success();
    // Basic auth without the trailing colon.
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[basic(KEY), json_ct()],
        &serde_json::to_vec(&batch_of(3, "no_colon")).expect("json"),
    )
    .await;
    r.assert_success();
    // analytics-node: Basic auth with an empty password and the body key.
    let mut body = batch_of(1, "both");
    body["writeKey"] = json!(KEY);
    post(s.addr, "/v1/batch", &body).await.assert_success();
    let p = s.pending().await;
    assert_eq!(p.get("body_key"), Some(&2));
    assert_eq!(p.get("no_colon"), Some(&3));
    assert_eq!(p.get("both"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_write_key_is_401_and_nothing_is_written() {
    let s = Server::start().await;
    let body = serde_json::to_vec(&batch_of(2, "nope")).expect("json");
    let wrong_body = {
        let mut b = batch_of(2, "nope");
        b["writeKey"] = json!("ffffffffffffffffffffffffffffffff");
        serde_json::to_vec(&b).expect("json")
    };
    type Case<'a> = (Vec<(&'a str, String)>, &'a Vec<u8>);
    let cases: Vec<Case<'_>> = vec![
        (vec![json_ct()], &body),
        (vec![basic("wrong-key:")], &body),
        (vec![basic(&format!("{KEY}x:"))], &body),
        (vec![basic(&KEY[..31])], &body),
        (vec![("Authorization", format!("Bearer {KEY}"))], &body),
        (vec![("Authorization", "Basic %%%".to_string())], &body),
        (vec![json_ct()], &wrong_body),
    ];
    for (headers, body) in cases {
        let r = request(s.addr, "POST", "/v1/batch", &headers, body).await;
        r.assert_error(401, "unauthorized");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{}",
            r.head
        );
    }
    // Single-message routes too, including the ignored ones.
    for path in ["/v1/track", "/v1/identify", "/v1/page"] {
        let r = request(
            s.addr,
            "POST",
            path,
            &[json_ct()],
            br#"{"userId":"u1","writeKey":"wrong"}"#,
        )
        .await;
        r.assert_error(401, "unauthorized");
    }
    assert_eq!(s.pending_total().await, 0);
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_decoded_and_bombs_rejected() {
    let s = Server::start().await;
    let body = gzip(&serde_json::to_vec(&batch_of(20, "zipped")).expect("json"));
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[
            basic(&format!("{KEY}:")),
            json_ct(),
            ("Content-Encoding", "gzip".into()),
        ],
        &body,
    )
    .await;
    r.assert_success();
    assert_eq!(s.pending().await.get("zipped"), Some(&20));
    // 50 MB of JSON whitespace: ~50 KB compressed, refused after 500 KiB of output.
    let mut bomb = b"{\"batch\": [".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 50 << 20));
    bomb.extend_from_slice(b"]}");
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[
            basic(&format!("{KEY}:")),
            ("Content-Encoding", "gzip".into()),
        ],
        &bomb,
    )
    .await;
    r.assert_error(400, "request_too_large");
    // Not gzip at all, and an unsupported encoding.
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[
            basic(&format!("{KEY}:")),
            ("Content-Encoding", "gzip".into()),
        ],
        b"{\"batch\": []}",
    )
    .await;
    r.assert_error(400, "invalid_gzip");
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[basic(&format!("{KEY}:")), ("Content-Encoding", "br".into())],
        b"{\"batch\": []}",
    )
    .await;
    r.assert_error(400, "unsupported_encoding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_request_is_400_and_nothing_is_committed() {
    let s = Server::start().await;
    // ~600 KB of valid messages: over the 500 KiB request limit.
    let mut items = Vec::new();
    let mut i = 0;
    while serde_json::to_vec(&json!({"batch": items}))
        .expect("json")
        .len()
        < 600_000
    {
        let mut m = engage(&format!("u{i}"), "big", true, "x@example.com");
        m["properties"]["pad"] = json!("p".repeat(10_000));
        items.push(m);
        i += 1;
    }
    let r = post(s.addr, "/v1/batch", &json!({"batch": items})).await;
    r.assert_error(400, "request_too_large");
    // A declared Content-Length far over the limit is refused before reading.
    let r = request(
        s.addr,
        "POST",
        "/v1/batch",
        &[
            basic(&format!("{KEY}:")),
            ("Content-Length", "50000000".into()),
        ],
        b"",
    )
    .await;
    r.assert_error(400, "request_too_large");
    assert_eq!(s.pending_total().await, 0);
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_dead_lettered_and_its_siblings_committed() {
    let s = Server::start().await;
    let mut big = engage("ubig", "sizes", true, "big@example.com");
    big["properties"]["pad"] = json!("p".repeat(MAX_MESSAGE_BYTES));
    let body = json!({"batch": [
        engage("u1", "sizes", true, "a@example.com"),
        big.clone(),
        engage("u2", "sizes", true, "b@example.com"),
    ]});
    post(s.addr, "/v1/batch", &body).await.assert_success();
    assert_eq!(s.pending().await.get("sizes"), Some(&2));
    assert_eq!(s.dead_letter_reasons().await, vec!["message_too_large"]);
    // The same message alone on /v1/track: the request *is* the message,
    // so the client is told 400; it is dead-lettered all the same.
    let r = post(s.addr, "/v1/track", &big).await;
    r.assert_error(400, "message_too_large");
    assert_eq!(
        s.dead_letter_reasons().await,
        vec!["message_too_large", "message_too_large"]
    );
    assert_eq!(s.pending().await.get("sizes"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_2500_items_is_400() {
    let s = Server::start().await;
    let items: Vec<Value> = (0..=MAX_BATCH_ITEMS)
        .map(|i| json!({"type": "page", "messageId": format!("p{i}")}))
        .collect();
    let r = post(s.addr, "/v1/batch", &json!({"batch": items})).await;
    r.assert_error(400, "batch_too_large");
    // Exactly the limit is fine.
    let items: Vec<Value> = (0..MAX_BATCH_ITEMS)
        .map(|i| json!({"type": "page", "messageId": format!("p{i}")}))
        .collect();
    post(s.addr, "/v1/batch", &json!({"batch": items}))
        .await
        .assert_success();
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_and_missing_batch_are_400() {
    let s = Server::start().await;
    let auth = [basic(&format!("{KEY}:")), json_ct()];
    for body in [
        &b"{\"batch\": ["[..],
        b"",
        b"not json",
        b"{\"batch\": [1,]}",
    ] {
        let r = request(s.addr, "POST", "/v1/batch", &auth, body).await;
        r.assert_error(400, "invalid_json");
    }
    for body in [
        &b"{}"[..],
        b"{\"batch\": {}}",
        b"[{\"type\": \"track\"}]",
        b"{\"type\": \"track\"}",
    ] {
        let r = request(s.addr, "POST", "/v1/batch", &auth, body).await;
        r.assert_error(400, "invalid_batch");
    }
    let r = request(s.addr, "POST", "/v1/track", &auth, b"[1, 2]").await;
    r.assert_error(400, "invalid_message");
    assert!(s.dead_letters().await.is_empty());
    // An empty batch is fine.
    post(s.addr, "/v1/batch", &json!({"batch": []}))
        .await
        .assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_items_are_dead_lettered_without_failing_their_siblings() {
    let s = Server::start().await;
    let mut bad_id = engage("not a valid id!", "mixed", true, "c@example.com");
    bad_id["messageId"] = json!("m-bad-id");
    let body = json!({"batch": [
        engage("u1", "mixed", true, "a@example.com"),
        "just a string",
        bad_id,
        42,
        {"type": "track", "event": "Audience Entered", "userId": "u9", "messageId": "m-unknown",
         "properties": {"nobody": true}, "context": {"traits": {"email": "u9@example.com"}, "personas": {"computation_key": "unknown_aud"}}},
        engage("u2", "mixed", true, "b@example.com"),
        {"type": "page", "name": "Home"},
    ]});
    post(s.addr, "/v1/batch", &body).await.assert_success();
    assert_eq!(s.pending().await.get("mixed"), Some(&2));
    let mut reasons = s.dead_letter_reasons().await;
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "invalid_external_user_id",
            "not_an_object",
            "not_an_object",
            "unknown_audience"
        ]
    );
    assert!(
        s.dead_letters()
            .await
            .iter()
            .all(|d| d.source.as_str() == "http")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_message_ids_are_accepted_and_dropped() {
    let s = Server::start().await;
    let body = batch_of(5, "dups");
    post(s.addr, "/v1/batch", &body).await.assert_success();
    assert_eq!(s.pending().await.get("dups"), Some(&5));
    // A client retry (e.g. it timed out before reading our 200).
    post(s.addr, "/v1/batch", &body).await.assert_success();
    assert_eq!(s.pending().await.get("dups"), Some(&5));
    // Same messageId with a different payload is still a duplicate.
    let mut changed = engage("u0", "dups", false, "user0@example.com");
    changed["messageId"] = body["batch"][0]["messageId"].clone();
    post(s.addr, "/v1/track", &changed).await.assert_success();
    assert_eq!(s.pending().await.get("dups"), Some(&5));
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_track_and_identify_messages() {
    let s = Server::start().await;
    // /v1/track without a type: implied by the path.
    let mut t = engage("t1", "tracked", true, "t1@example.com");
    t.as_object_mut().expect("object").remove("type");
    post(s.addr, "/v1/track", &t).await.assert_success();
    assert_eq!(s.pending().await.get("tracked"), Some(&1));
    // Engage identify audience: traits.<audience_key> = true, body writeKey.
    let identify = json!({
        "userId": "i1",
        "messageId": "m-identify-1",
        "writeKey": KEY,
        "timestamp": "2026-11-01T00:00:00Z",
        "traits": {"identified": true, "email": "i1@example.com"},
        "context": {"personas": {"computation_class": "audience", "computation_key": "identified",
            "audience_settings": {"advertiserId": "585806696618602999", "countryCode": "US"}}}
    });
    let r = request(
        s.addr,
        "POST",
        "/v1/identify",
        &[json_ct()],
        &serde_json::to_vec(&identify).expect("json"),
    )
    .await;
    r.assert_success();
    assert_eq!(s.pending().await.get("identified"), Some(&1));
    // An explicit, matching type is fine; a different one is dead-lettered.
    let mut i2 = identify.clone();
    i2["type"] = json!("identify");
    i2["userId"] = json!("i2");
    i2["messageId"] = json!("m-identify-2");
    post(s.addr, "/v1/identify", &i2).await.assert_success();
    assert_eq!(s.pending().await.get("identified"), Some(&2));
    let mut wrong = engage("t2", "tracked", true, "t2@example.com");
    wrong["type"] = json!("track");
    post(s.addr, "/v1/identify", &wrong).await.assert_success();
    assert_eq!(s.dead_letter_reasons().await, vec!["type_mismatch"]);
    assert_eq!(s.pending().await.get("tracked"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_screen_group_alias_are_accepted_counted_and_ignored() {
    let s = Server::start().await;
    let before = http::stats().ignored;
    for path in ["/v1/page", "/v1/screen", "/v1/group", "/v1/alias"] {
        post(
            s.addr,
            path,
            &json!({"userId": "u1", "messageId": format!("m{path}"), "name": "Home"}),
        )
        .await
        .assert_success();
    }
    // Non-audience types inside a batch are ignored too.
    post(
        s.addr,
        "/v1/batch",
        &json!({"batch": [{"type": "screen", "name": "S"}, {"type": "alias", "previousId": "a"}]}),
    )
    .await
    .assert_success();
    assert!(http::stats().ignored >= before + 6);
    assert_eq!(s.pending_total().await, 0);
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_is_503_never_200() {
    let mut s = Server::start().await;
    post(s.addr, "/v1/batch", &batch_of(2, "before"))
        .await
        .assert_success();
    s.stop_writer().await;
    // Known audience (the submit fails) and unknown audience (creating it fails).
    for body in [batch_of(2, "before"), batch_of(2, "after")] {
        let mut body = body;
        for (i, m) in body["batch"]
            .as_array_mut()
            .expect("batch")
            .iter_mut()
            .enumerate()
        {
            m["messageId"] = json!(format!("new-{i}"));
        }
        let r = post(s.addr, "/v1/batch", &body).await;
        r.assert_error(503, "store_unavailable");
    }
    let r = post(
        s.addr,
        "/v1/track",
        &engage("x", "before", true, "x@example.com"),
    )
    .await;
    r.assert_error(503, "store_unavailable");
    // What was acknowledged before is still there.
    let store = Store::open(s.dir.path().join("amc-sync.db")).expect("reopen");
    assert_eq!(
        store.pending_counts().expect("counts").get("before"),
        Some(&2)
    );
    assert_eq!(store.pending_counts().expect("counts").get("after"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_are_all_committed() {
    let s = Server::start().await;
    let mut tasks = Vec::new();
    for c in 0..16 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let items: Vec<Value> = (0..50)
                .map(|i| engage(&format!("c{c}u{i}"), "load", true, "l@example.com"))
                .collect();
            post(addr, "/v1/batch", &json!({"batch": items})).await
        }));
    }
    for t in tasks {
        t.await.expect("join").assert_success();
    }
    assert_eq!(s.pending().await.get("load"), Some(&800));
}

/// Installs a process-wide subscriber at TRACE level writing into a buffer
/// (other tests' events land there too, which only widens the check).
fn capture_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("logs").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = Buf(Arc::clone(&buf));
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("only this test installs a global subscriber");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_pii_never_reaches_the_database_wal_or_responses() {
    const CANARY: &str = "canary-q7x9z@example-canary.test";
    const CANARY_LOCAL: &str = "canary-q7x9z";
    let logs = capture_logs();
    let mut s = Server::start().await;
    let mut replies = Vec::new();
    // A valid message.
    let mut good = engage("cgood", "canary_aud", true, CANARY);
    good["properties"]["first_name"] = json!(CANARY_LOCAL);
    // Invalid ones: bad external id, unknown audience, oversize, type mismatch.
    let mut bad_id = engage("bad id!", "canary_aud", true, CANARY);
    bad_id["messageId"] = json!("m-canary-bad");
    let unknown = json!({"type": "track", "event": "Audience Entered", "userId": "cu",
        "messageId": "m-canary-unknown",
        "properties": {"email": CANARY, "nobody": true},
        "context": {"personas": {"computation_key": "unknown_aud"}}});
    let mut big = engage("cbig", "canary_aud", true, CANARY);
    big["properties"]["pad"] = json!(CANARY.repeat(MAX_MESSAGE_BYTES / CANARY.len() + 1));
    big["messageId"] = json!("m-canary-big");
    replies.push(
        post(
            s.addr,
            "/v1/batch",
            &json!({"batch": [good, bad_id, unknown, big.clone(), CANARY]}),
        )
        .await,
    );
    replies.push(post(s.addr, "/v1/track", &big).await);
    let mut mismatch = engage("cmm", "canary_aud", true, CANARY);
    mismatch["messageId"] = json!("m-canary-mm");
    replies.push(post(s.addr, "/v1/identify", &mismatch).await);
    // Requests refused outright: invalid JSON, bad key.
    replies.push(
        request(
            s.addr,
            "POST",
            "/v1/batch",
            &[basic(&format!("{KEY}:"))],
            format!("{{\"batch\": [{{\"email\": \"{CANARY}\"").as_bytes(),
        )
        .await,
    );
    replies.push(
        request(
            s.addr,
            "POST",
            "/v1/track",
            &[basic("wrong:")],
            format!("{{\"email\": \"{CANARY}\"}}").as_bytes(),
        )
        .await,
    );
    assert_eq!(s.pending().await.get("canary_aud"), Some(&1));
    assert_eq!(s.dead_letters().await.len(), 6);
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 400, 200, 400, 401]);
    for r in &replies {
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains(CANARY_LOCAL), "{text}");
        assert!(!r.head.contains(CANARY_LOCAL), "{}", r.head);
    }
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    let live = s.db_bytes();
    assert!(!live.is_empty());
    assert!(!has(&live, CANARY_LOCAL), "canary in the database or WAL");
    // After a clean shutdown (WAL checkpointed into the file) too.
    s.stop_writer().await;
    let closed = s.db_bytes();
    assert!(!has(&closed, CANARY_LOCAL), "canary in the database or WAL");
    let dls = Store::open(s.dir.path().join("amc-sync.db"))
        .expect("reopen")
        .dead_letters(&DeadLetterFilter::default())
        .expect("dead letters");
    for d in &dls {
        assert!(!d.message.contains(CANARY_LOCAL), "{}", d.message);
    }
    let reasons: Vec<&str> = dls.iter().map(|d| d.reason.as_str()).collect();
    assert!(reasons.contains(&"message_too_large"), "{reasons:?}");
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).to_string();
    assert!(
        logs.contains("http intake: batch committed"),
        "logs were captured"
    );
    assert!(logs.contains("type_mismatch"), "reason codes are logged");
    assert!(!logs.contains(CANARY_LOCAL), "canary in the logs");
    assert!(reasons.contains(&"type_mismatch"), "{reasons:?}");
}
