//! Rough throughput probe of the store (not a timed assertion; run with
//! `cargo test --release --test store_throughput -- --ignored --nocapture`).

use std::time::Instant;

use amc_sync::model::{Action, HashedPii, MemberChange, Source};
use amc_sync::store::{IncomingItem, NewAudience, Store, Target, Writer};

fn items(prefix: &str, n: usize) -> Vec<IncomingItem> {
    (0..n)
        .map(|i| IncomingItem::Change {
            change: MemberChange {
                audience_key: "a".into(),
                external_user_id: format!("{prefix}{i}"),
                action: Action::Create,
                event_time_ms: 1_700_000_000_000,
                country_code: "US".into(),
                hashed_pii: HashedPii {
                    email: Some(format!("{i:064x}")),
                    phone: Some(format!("{:064x}", i + 1)),
                    firstname: Some(format!("{:064x}", i + 2)),
                    lastname: Some(format!("{:064x}", i + 3)),
                    postal: Some(format!("{:064x}", i + 4)),
                    ..HashedPii::default()
                },
                user_consent: None,
            },
            message_id: Some(format!("{prefix}-msg-{i}")),
            source: Source::Http,
        })
        .collect()
}

#[test]
#[ignore = "measurement; run explicitly in release mode"]
fn enqueue_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Store::open(dir.path().join("t.db")).expect("open");
    s.create_audience(&NewAudience {
        key: "a".into(),
        country_code: "US".into(),
        description: String::new(),
        target: Target::AdvertiserId("1".into()),
        external_audience_id: None,
        ttl_secs: None,
        cpm_cents: None,
        currency: None,
    })
    .expect("audience");
    let n = 200_000;
    let all = items("f", n);
    let t = Instant::now();
    for chunk in all.chunks(10_000) {
        s.enqueue_batch(chunk).expect("enqueue");
    }
    let dt = t.elapsed();
    println!(
        "file-style: {n} events in {dt:?} = {:.0}/s",
        n as f64 / dt.as_secs_f64()
    );

    let w = Writer::spawn(s).expect("spawn");
    let t = Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|k| {
            let h = w.handle();
            std::thread::spawn(move || {
                let all = items(&format!("h{k}-"), 10_000);
                for chunk in all.chunks(100) {
                    h.submit(chunk.to_vec()).expect("submit");
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("join");
    }
    let dt = t.elapsed();
    println!(
        "http-style: 160000 events (16 clients x batches of 100) in {dt:?} = {:.0}/s, {:?}",
        160_000.0 / dt.as_secs_f64(),
        w.stats()
    );
}
