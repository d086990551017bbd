//! The shared sample inputs (`../shared/samples`) read through the file
//! formats and mapped to hashed changes, as the drop folder will: every
//! Engage event and every CRM row maps; the remove list maps to DELETE.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amc_sync::ingest::file::FileReader;
use amc_sync::mapping::{MapContext, MappingSet, Outcome};
use amc_sync::model::Action;
use amc_sync::pii::{Country, Profile};

fn samples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} not found", dir.display());
        None
    }
}

/// Mapped changes counted by (audience key, action).
type MappedCounts = HashMap<(String, Action), usize>;
/// Other outcomes counted by reason code.
type ReasonCounts = HashMap<&'static str, usize>;

/// Maps every item of `file`; returns (actions by audience, reason codes of the rest).
fn map_file(path: &Path) -> (MappedCounts, ReasonCounts) {
    let set = MappingSet::default();
    let ctx = MapContext::new(Profile::Amazon, 1_700_000_000_000).with_default_country(Country::US);
    let mut mapped = HashMap::new();
    let mut other = HashMap::new();
    for item in FileReader::open(path, 0).expect("open sample") {
        let item = item.expect("readable");
        let msg = item.message.expect("every sample line is a JSON object");
        match set.map(&msg, &ctx) {
            Outcome::Mapped { mapped: m, .. } => {
                *mapped
                    .entry((m.change.audience_key.clone(), m.change.action))
                    .or_insert(0) += 1;
            }
            o => *other.entry(o.reason_code().unwrap_or("?")).or_insert(0) += 1,
        }
    }
    (mapped, other)
}

#[test]
fn crm_csv_lists_map_to_create_and_delete() {
    let Some(dir) = samples() else { return };
    let (add, other) = map_file(&dir.join("high_value_customers.csv"));
    assert!(other.is_empty(), "{other:?}");
    let n = add[&("high_value_customers".to_string(), Action::Create)];
    assert!(n > 0);
    let (remove, other) = map_file(&dir.join("high_value_customers.remove.csv"));
    assert!(other.is_empty(), "{other:?}");
    assert!(remove[&("high_value_customers".to_string(), Action::Delete)] > 0);
}

#[test]
fn engage_ndjson_and_batch_json_map() {
    let Some(dir) = samples() else { return };
    for f in [
        "engage-track.ndjson",
        "engage-identify.ndjson",
        "batch.json",
    ] {
        let (mapped, other) = map_file(&dir.join(f));
        let total: usize = mapped.values().sum();
        assert!(total > 0, "{f}: nothing mapped");
        assert!(other.is_empty(), "{f}: {other:?}");
    }
}
