//! Encoding a 10,000-record `POST /amc/audiences/records` body (DESIGN.md 5:
//! planner + encoder ≤ 20 ms per 10,000-record body).

use std::hint::black_box;

use amc_sync::amazon::{
    Digits, Record, body_encoded_len, encode_records_body, encode_records_body_into,
};
use amc_sync::model::{Action, AmznConsent, Consent, ConsentValue, Geo, HashedPii, UserConsent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn hex(n: u64) -> String {
    format!("{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn records(n: usize) -> Vec<Record> {
    (0..n as u64)
        .map(|i| Record {
            external_user_id: format!("user_{i:010}"),
            country_code: Some(if i.is_multiple_of(5) { "DE" } else { "US" }.into()),
            action: if i.is_multiple_of(7) {
                Action::Delete
            } else {
                Action::Create
            },
            hashed_pii: vec![HashedPii {
                email: Some(hex(i)),
                phone: Some(hex(i + 1)),
                firstname: Some(hex(i + 2)),
                lastname: Some(hex(i + 3)),
                postal: Some(hex(i + 4)),
                ..Default::default()
            }],
            user_consent: i.is_multiple_of(5).then(|| UserConsent {
                geo: Geo {
                    country_code: "DE".into(),
                    ip_address: None,
                },
                consent: Some(Consent {
                    amzn: Some(AmznConsent {
                        amzn_ad_storage: Some(ConsentValue::Granted),
                        amzn_user_data: Some(ConsentValue::Granted),
                    }),
                    tcf: None,
                    gpp: None,
                }),
            }),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let id = Digits::parse("9223372036854775907").unwrap();
    let rs = records(10_000);
    let bytes = body_encoded_len(&id, &rs);
    eprintln!("10,000-record body: {bytes} bytes");
    let mut g = c.benchmark_group("amazon_encode");
    g.throughput(Throughput::Elements(rs.len() as u64));
    g.bench_function("encode_records_body/10k", |b| {
        b.iter(|| black_box(encode_records_body(black_box(&id), black_box(&rs))))
    });
    let mut buf = Vec::with_capacity(bytes);
    g.bench_function("encode_records_body_into_reused/10k", |b| {
        b.iter(|| {
            buf.clear();
            encode_records_body_into(&mut buf, black_box(&id), black_box(&rs));
            black_box(buf.len())
        })
    });
    g.bench_function("body_encoded_len/10k", |b| {
        b.iter(|| black_box(body_encoded_len(black_box(&id), black_box(&rs))))
    });
    g.bench_function("serde_json_to_vec/10k (reference)", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&rs)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
