//! Normalization + hashing throughput of realistic records: five PII fields
//! (email, first name, last name, phone, postal) across mixed countries.
//! Criterion reports records/s (`Throughput::Elements`); the target (DESIGN.md
//! section 5) is that this stage is not the bottleneck at 300,000 events/s on
//! 2 cores. Run: `cargo bench --bench pii`.

use std::hint::black_box;

use amc_sync::pii::{self, Country, Profile, RawPii};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FIRST: &[&str] = &[
    "John",
    "Jürgen",
    "Marie-Hélène",
    "Øyvind",
    "José",
    "Ana",
    "Hiroshi",
    "Priya",
];
const LAST: &[&str] = &[
    "Doe",
    "Müller",
    "Dupont-Moretti",
    "O'Connor",
    "García",
    "Rossi",
    "Tanaka",
    "Sharma",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "Gmail.com",
    "web.de",
    "orange.fr",
    "yahoo.co.jp",
];

/// (country, phone, postal, address) per market.
const MARKETS: &[(&str, &str, &str, &str)] = &[
    (
        "US",
        "(415) 555-{n4}",
        "94105-{n4}",
        "{n3} North Main Street, Apt #{n2}",
    ),
    (
        "GB",
        "020 7946 {n4}",
        "SW1A 1AA",
        "Flat {n2}, {n3} High Road",
    ),
    ("DE", "030 {n4}{n3}", "10115", "Müllerstraße {n2}"),
    (
        "FR",
        "01 42 68 {n2} {n2}",
        "75008",
        "{n2} Avenue des Champs-Élysées",
    ),
    ("JP", "03-{n4}-{n4}", "100-0001", "{n2}-{n2} Chiyoda"),
];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn digits(&mut self, n: u32) -> String {
        format!("{:0width$}", self.next() % 10u64.pow(n), width = n as usize)
    }
}

fn fill(template: &str, rng: &mut Lcg) -> String {
    template
        .replace("{n4}", &rng.digits(4))
        .replace("{n3}", &rng.digits(3))
        .replace("{n2}", &rng.digits(2))
}

fn records(n: usize) -> Vec<(Country, RawPii)> {
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let (cc, phone, postal, _addr) = MARKETS[i % MARKETS.len()];
            let first = FIRST[rng.next() as usize % FIRST.len()];
            let last = LAST[rng.next() as usize % LAST.len()];
            let domain = DOMAINS[rng.next() as usize % DOMAINS.len()];
            let raw = RawPii {
                email: Some(format!(" {first}.{last}{}@{domain} ", rng.digits(3))),
                first_name: Some(first.to_string()),
                last_name: Some(last.to_string()),
                phone: Some(fill(phone, &mut rng)),
                postal: Some(fill(postal, &mut rng)),
                ..Default::default()
            };
            (Country::parse(cc).expect("valid country"), raw)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = records(10_000);
    let mut g = c.benchmark_group("pii");
    g.throughput(Throughput::Elements(data.len() as u64));
    g.sample_size(20);
    g.bench_function("hash_pii_5_fields_mixed_countries_amazon", |b| {
        b.iter(|| {
            for (country, raw) in &data {
                black_box(pii::hash_pii(Profile::Amazon, *country, black_box(raw)));
            }
        })
    });
    g.bench_function("hash_pii_5_fields_mixed_countries_segment", |b| {
        b.iter(|| {
            for (country, raw) in &data {
                black_box(pii::hash_pii(Profile::Segment, *country, black_box(raw)));
            }
        })
    });
    let addresses: Vec<(Country, String)> = {
        let mut rng = Lcg(7);
        (0..10_000)
            .map(|i| {
                let (cc, _, _, addr) = MARKETS[i % MARKETS.len()];
                (Country::parse(cc).expect("valid"), fill(addr, &mut rng))
            })
            .collect()
    };
    g.bench_function("address_only", |b| {
        b.iter(|| {
            for (country, a) in &addresses {
                black_box(pii::normalize(
                    Profile::Amazon,
                    pii::Field::Address,
                    *country,
                    a,
                ));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
