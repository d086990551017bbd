//! Integration tests of `amc_sync::store` on real SQLite files in temp dirs.

use std::path::{Path, PathBuf};

use amc_sync::model::{
    Action, AmznConsent, Consent, ConsentValue, Geo, HashedPii, MemberChange, Source, UserConsent,
};
use amc_sync::pii::{self, Profile, RawPii, country::Country};
use amc_sync::store::{
    DeadLetterFilter, DeadLetterPayload, DeadLetterSource, FileCheckpoint, FileState, IncomingItem,
    ItemOutcome, NewAudience, NewDeadLetter, Store, StoreError, Target, Writer, reason,
};

const AUD: &str = "vip_users";

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("amc-sync.db")
}

fn open_with_audience(path: &Path) -> Store {
    let mut s = Store::open(path).expect("open");
    if s.audience(AUD).expect("get").is_none() {
        s.create_audience(&NewAudience {
            key: AUD.into(),
            country_code: "US".into(),
            description: "VIP".into(),
            target: Target::AdvertiserId("9007199254740993123".into()),
            external_audience_id: Some("ext-1".into()),
            ttl_secs: Some(34_300_800),
            cpm_cents: Some(150),
            currency: Some("USD".into()),
        })
        .expect("create");
    }
    s
}

fn digest(c: char) -> String {
    c.to_string().repeat(64)
}

fn email(c: char) -> HashedPii {
    HashedPii {
        email: Some(digest(c)),
        ..HashedPii::default()
    }
}

fn change(user: &str, action: Action, t: i64, pii: HashedPii) -> MemberChange {
    MemberChange {
        audience_key: AUD.into(),
        external_user_id: user.into(),
        action,
        event_time_ms: t,
        country_code: "US".into(),
        hashed_pii: pii,
        user_consent: None,
    }
}

fn item(c: MemberChange) -> IncomingItem {
    IncomingItem::change(c, Source::Http)
}

fn with_id(c: MemberChange, id: &str) -> IncomingItem {
    IncomingItem::Change {
        change: c,
        message_id: Some(id.into()),
        source: Source::Http,
    }
}

#[test]
fn enter_then_exit_before_upload_sends_only_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let out = s
        .enqueue_batch(&[
            item(change("u1", Action::Create, 1_000, email('a'))),
            item(change("u1", Action::Delete, 2_000, email('b'))),
        ])
        .unwrap();
    assert_eq!(out.outcomes, [ItemOutcome::Inserted, ItemOutcome::Replaced]);
    let batch = s.pending_batch(AUD, 10, 0).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].action, Action::Delete);
    assert_eq!(batch[0].event_time_ms, 2_000);
    assert_eq!(
        batch[0].hashed_pii,
        [email('b')],
        "a change of action starts from the new identifiers"
    );
}

#[test]
fn same_action_merges_distinct_hashed_pii() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let consent = UserConsent {
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
    };
    let mut second = change("u1", Action::Create, 2_000, email('b'));
    second.user_consent = Some(consent.clone());
    let out = s
        .enqueue_batch(&[
            item(change("u1", Action::Create, 1_000, email('a'))),
            item(second),
            item(change("u1", Action::Create, 1_500, email('a'))),
        ])
        .unwrap();
    assert_eq!(
        out.outcomes,
        [
            ItemOutcome::Inserted,
            ItemOutcome::Merged,
            ItemOutcome::Merged
        ]
    );
    let batch = s.pending_batch(AUD, 10, 0).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].hashed_pii, [email('a'), email('b')]);
    assert_eq!(batch[0].event_time_ms, 2_000, "newest event time kept");
    assert_eq!(batch[0].user_consent, Some(consent), "newest consent kept");
}

#[test]
fn hundred_and_one_distinct_identifiers_are_capped_at_100() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let items: Vec<IncomingItem> = (0..101)
        .map(|i| {
            let p = HashedPii {
                phone: Some(format!("{i:064x}")),
                ..HashedPii::default()
            };
            item(change("u1", Action::Create, 1_000 + i, p))
        })
        .collect();
    let out = s.enqueue_batch(&items).unwrap();
    assert_eq!((out.inserted, out.merged, out.pii_dropped), (1, 100, 1));
    let batch = s.pending_batch(AUD, 10, 0).unwrap();
    assert_eq!(batch[0].hashed_pii.len(), 100);
    assert_eq!(batch[0].event_time_ms, 1_100);
}

#[test]
fn older_event_with_other_action_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let out = s
        .enqueue_batch(&[
            item(change("u1", Action::Delete, 5_000, email('a'))),
            item(change("u1", Action::Create, 4_000, email('b'))),
        ])
        .unwrap();
    assert_eq!(out.outcomes, [ItemOutcome::Inserted, ItemOutcome::Stale]);
    assert_eq!(out.stale, 1);
    let batch = s.pending_batch(AUD, 10, 0).unwrap();
    assert_eq!(batch[0].action, Action::Delete);
    assert_eq!(batch[0].hashed_pii, [email('a')]);
}

#[test]
fn late_event_older_than_uploaded_state_is_stale_and_reentry_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    s.enqueue_batch(&[item(change("u1", Action::Delete, 5_000, email('a')))])
        .unwrap();
    let b = s.pending_batch(AUD, 10, 0).unwrap();
    s.ack_uploaded(AUD, &[("u1".into(), b[0].seq)]).unwrap();
    // A late "enter" older than the uploaded "exit" must not re-add the user.
    let out = s
        .enqueue_batch(&[item(change("u1", Action::Create, 4_000, email('a')))])
        .unwrap();
    assert_eq!(out.outcomes, [ItemOutcome::Stale]);
    // A newer re-entry after the upload is a new change.
    let out = s
        .enqueue_batch(&[item(change("u1", Action::Create, 6_000, email('a')))])
        .unwrap();
    assert_eq!(out.outcomes, [ItemOutcome::Inserted]);
}

#[test]
fn duplicate_message_ids_are_accepted_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let first = s
        .enqueue_batch(&[
            with_id(change("u1", Action::Create, 1, email('a')), "m-1"),
            // One message may map to several changes in the same submission.
            with_id(change("u2", Action::Create, 1, email('b')), "m-1"),
        ])
        .unwrap();
    assert_eq!(first.inserted, 2);
    let retry = s
        .enqueue_batch(&[
            with_id(change("u1", Action::Delete, 9, email('a')), "m-1"),
            with_id(change("u3", Action::Create, 1, email('c')), "m-2"),
        ])
        .unwrap();
    assert_eq!(
        retry.outcomes,
        [ItemOutcome::Duplicate, ItemOutcome::Inserted]
    );
    assert_eq!(retry.duplicates, 1);
    let b = s.pending_batch(AUD, 10, 0).unwrap();
    assert_eq!(b.len(), 3);
    assert!(b.iter().all(|r| r.action == Action::Create));
    // After the dedup window is pruned the id is new again.
    assert_eq!(s.prune_seen_messages(i64::MAX).unwrap(), 2);
    let again = s
        .enqueue_batch(&[with_id(change("u4", Action::Create, 1, email('d')), "m-1")])
        .unwrap();
    assert_eq!(again.outcomes, [ItemOutcome::Inserted]);
}

#[test]
fn dead_letters_with_reason_codes_filters_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let mut unknown = change("u1", Action::Create, 1, email('a'));
    unknown.audience_key = "nope".into();
    let mut raw = change("u2", Action::Create, 1, HashedPii::default());
    raw.hashed_pii.email = Some("someone@example.com".into());
    let mut bad_id = change("someone@example.com", Action::Create, 1, email('a'));
    bad_id.country_code = "US".into();
    let out = s
        .enqueue_batch(&[
            IncomingItem::DeadLetter(NewDeadLetter {
                source: DeadLetterSource::File,
                reason: "consent_required".into(),
                message: "EEA record without consent".into(),
                payload: Some(DeadLetterPayload {
                    external_user_id: Some("u9".into()),
                    line: Some(7),
                    ..DeadLetterPayload::default()
                }),
                message_id: None,
            }),
            item(unknown),
            item(raw),
            item(bad_id),
            item(change("ok", Action::Create, 1, email('a'))),
        ])
        .unwrap();
    assert_eq!(out.dead_lettered, 4);
    assert_eq!(out.inserted, 1, "a refused item never fails its siblings");
    let counts = s.dead_letter_counts().unwrap();
    assert_eq!(counts.get("consent_required"), Some(&1));
    assert_eq!(counts.get(reason::UNKNOWN_AUDIENCE), Some(&1));
    assert_eq!(counts.get(reason::INVALID_HASHED_PII), Some(&1));
    assert_eq!(counts.get(reason::INVALID_EXTERNAL_USER_ID), Some(&1));

    let all = s.dead_letters(&DeadLetterFilter::default()).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].source, DeadLetterSource::File);
    assert_eq!(all[0].payload.as_ref().and_then(|p| p.line), Some(7));
    let bad = s
        .dead_letters(&DeadLetterFilter {
            reason: Some(reason::INVALID_HASHED_PII.into()),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].source, DeadLetterSource::Http);
    let p = bad[0].payload.as_ref().unwrap();
    assert!(p.hashed_pii.is_empty(), "the non-digest value is dropped");
    assert_eq!(p.external_user_id.as_deref(), Some("u2"));
    let bad_id = s
        .dead_letters(&DeadLetterFilter {
            reason: Some(reason::INVALID_EXTERNAL_USER_ID.into()),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(bad_id[0].payload.as_ref().unwrap().external_user_id, None);

    let ids: Vec<i64> = all.iter().take(2).map(|d| d.id).collect();
    assert_eq!(s.mark_dead_letters_retried(&ids).unwrap(), 2);
    let not_retried = s
        .dead_letters(&DeadLetterFilter {
            retried: Some(false),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(not_retried.len(), 2);
    let page = s
        .dead_letters(&DeadLetterFilter {
            after_id: all[0].id,
            limit: 2,
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(
        page.iter().map(|d| d.id).collect::<Vec<_>>(),
        [all[1].id, all[2].id]
    );
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let cp = FileCheckpoint {
        fingerprint: "sha256:abc".into(),
        path: "/drop/vip_users.csv".into(),
        byte_offset: 4_096,
        rows_ok: 10,
        rows_rejected: 1,
        state: FileState::Reading,
    };
    let (before, seq) = {
        let mut s = open_with_audience(&path);
        s.set_amazon_audience_id(AUD, "123456789012345678901")
            .unwrap();
        s.enqueue_batch(&[
            with_id(change("u1", Action::Create, 1, email('a')), "m-1"),
            item(change("u2", Action::Delete, 2, email('b'))),
            IncomingItem::FileCheckpoint(cp.clone()),
            IncomingItem::DeadLetter(NewDeadLetter {
                source: DeadLetterSource::Upload,
                reason: "invalid_record".into(),
                message: "rejected by Amazon".into(),
                payload: None,
                message_id: None,
            }),
        ])
        .unwrap();
        let b = s.pending_batch(AUD, 10, 0).unwrap();
        (b.clone(), b.last().unwrap().seq)
    };
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.pending_batch(AUD, 10, 0).unwrap(), before);
    let a = s.audience(AUD).unwrap().unwrap();
    assert_eq!(a.audience_id.as_deref(), Some("123456789012345678901"));
    assert_eq!(a.target, Target::AdvertiserId("9007199254740993123".into()));
    assert_eq!(a.ttl_secs, Some(34_300_800));
    assert_eq!(s.file_checkpoint("sha256:abc").unwrap(), Some(cp));
    assert_eq!(
        s.dead_letter_counts().unwrap().get("invalid_record"),
        Some(&1)
    );
    assert_eq!(s.pending_counts().unwrap().get(AUD), Some(&2));
    // The dedup window survives too.
    let out = s
        .enqueue_batch(&[with_id(change("u1", Action::Delete, 9, email('a')), "m-1")])
        .unwrap();
    assert_eq!(out.duplicates, 1);
    // Seqs keep increasing across restarts.
    s.enqueue_batch(&[item(change("u3", Action::Create, 1, email('c')))])
        .unwrap();
    let b = s.pending_batch(AUD, 10, seq).unwrap();
    assert_eq!(b.len(), 1);
    assert!(b[0].seq > seq);
}

#[test]
fn second_opener_gets_locked_with_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let first = Store::open(&path).unwrap();
    match Store::open(&path) {
        Err(StoreError::Locked { pid, .. }) => {
            if cfg!(unix) {
                assert_eq!(pid, Some(std::process::id()));
            }
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    Store::open(&path).expect("lock released on close");
}

#[test]
fn ack_keeps_rows_changed_since_dequeue() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    s.enqueue_batch(&[
        item(change("u1", Action::Create, 1, email('a'))),
        item(change("u2", Action::Create, 1, email('b'))),
    ])
    .unwrap();
    let b = s.pending_batch(AUD, 10, 0).unwrap();
    // u1 gains an identifier while the upload is in flight.
    s.enqueue_batch(&[item(change("u1", Action::Create, 2, email('c')))])
        .unwrap();
    let acks: Vec<(String, i64)> = b
        .iter()
        .map(|r| (r.external_user_id.clone(), r.seq))
        .collect();
    let ack = s.ack_uploaded(AUD, &acks).unwrap();
    assert_eq!((ack.acked, ack.kept), (1, 1));
    let left = s.pending_batch(AUD, 10, 0).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].external_user_id, "u1");
    assert_eq!(left[0].hashed_pii, [email('a'), email('c')]);
    // Acking the same records again is a no-op.
    let again = s.ack_uploaded(AUD, &acks[1..]).unwrap();
    assert_eq!((again.acked, again.kept), (0, 1));
}

#[test]
fn pending_batch_is_fifo_and_pages_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let items: Vec<IncomingItem> = (0..25)
        .map(|i| item(change(&format!("u{i}"), Action::Create, 1, email('a'))))
        .collect();
    s.enqueue_batch(&items).unwrap();
    // Updating u0 moves it to the back of the queue.
    s.enqueue_batch(&[item(change("u0", Action::Delete, 2, email('a')))])
        .unwrap();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let b = s.pending_batch(AUD, 10, after).unwrap();
        if b.is_empty() {
            break;
        }
        assert!(b.len() <= 10);
        after = b.last().unwrap().seq;
        seen.extend(b.into_iter().map(|r| r.external_user_id));
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[0], "u1");
    assert_eq!(seen[24], "u0");
    assert!(matches!(
        s.pending_batch("nope", 10, 0),
        Err(StoreError::UnknownAudience { .. })
    ));
}

#[test]
fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let v1 = {
        let s = open_with_audience(&path);
        s.schema_version().unwrap()
    };
    assert!(v1 >= 1);
    for _ in 0..3 {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), v1);
        assert_eq!(s.audiences().unwrap().len(), 1);
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Store::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
    }
    match Store::open(&path) {
        Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn audience_crud_validates_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with_audience(&db(&dir));
    let dup = s.create_audience(&NewAudience {
        key: AUD.into(),
        country_code: "US".into(),
        description: String::new(),
        target: Target::ConnectionId("c-1".into()),
        external_audience_id: None,
        ttl_secs: None,
        cpm_cents: None,
        currency: None,
    });
    assert!(matches!(dup, Err(StoreError::AudienceExists { .. })));
    let bad = s.create_audience(&NewAudience {
        key: "other".into(),
        country_code: "US".into(),
        description: String::new(),
        target: Target::AdvertiserId("12a".into()),
        external_audience_id: None,
        ttl_secs: None,
        cpm_cents: None,
        currency: None,
    });
    assert!(matches!(
        bad,
        Err(StoreError::Invalid {
            field: "advertiser_id",
            ..
        })
    ));
    s.create_audience(&NewAudience {
        key: "eu_list".into(),
        country_code: "DE".into(),
        description: "EU".into(),
        target: Target::ConnectionId("conn-7".into()),
        external_audience_id: None,
        ttl_secs: None,
        cpm_cents: None,
        currency: None,
    })
    .unwrap();
    for bad in ["", "12 3", "-1", "1e5", "١٢٣"] {
        assert!(
            matches!(
                s.set_amazon_audience_id(AUD, bad),
                Err(StoreError::Invalid {
                    field: "audience_id",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.set_amazon_audience_id("missing", "1"),
        Err(StoreError::UnknownAudience { .. })
    ));
    s.set_amazon_audience_id("eu_list", "18446744073709551616")
        .unwrap();
    let list = s.audiences().unwrap();
    assert_eq!(
        list.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        ["eu_list", AUD]
    );
    assert_eq!(list[0].audience_id.as_deref(), Some("18446744073709551616"));
    assert_eq!(list[0].target, Target::ConnectionId("conn-7".into()));
    let counts = s.pending_counts().unwrap();
    assert_eq!(counts.get("eu_list"), Some(&0));
}

#[test]
fn writer_groups_concurrent_submissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = open_with_audience(&path);
    let writer = Writer::spawn(store).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let h = writer.handle();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let c = change(&format!("t{t}-u{i}"), Action::Create, 1, email('a'));
                    let out = h
                        .submit(vec![with_id(c, &format!("m-{t}-{i}"))])
                        .expect("submit");
                    assert_eq!(out.outcomes, [ItemOutcome::Inserted]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = writer.stats();
    assert_eq!(stats.submissions, 800);
    assert!(
        stats.transactions < 800,
        "group commit must share transactions: {stats:?}"
    );
    let h = writer.handle();
    let counts = h.call(|s| s.pending_counts()).unwrap();
    assert_eq!(counts.get(AUD), Some(&800));
    let store = writer.shutdown().unwrap();
    assert!(store.commit_count() < 800);
    assert!(matches!(
        h.submit(Vec::new()),
        Err(StoreError::WriterClosed)
    ));
    drop(store);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.pending_batch(AUD, 1_000, 0).unwrap().len(), 800);
}

fn read_or_empty(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn canary_pii_never_reaches_db_or_wal() {
    const CANARY: &str = "Canary-7F3E@Example.com";
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let raw = RawPii {
        email: Some(CANARY.into()),
        first_name: Some("Canaryfirst".into()),
        ..RawPii::default()
    };
    let country = Country::parse("US").unwrap();
    let hashed = pii::hash_pii(Profile::Amazon, country, &raw);
    assert!(hashed.email.is_some());
    let needles = [
        CANARY.to_string(),
        CANARY.to_lowercase(),
        "canary-7f3e".to_string(),
        "canaryfirst".to_string(),
    ];
    let check = |when: &str| {
        for file in [&path, &wal] {
            let bytes = read_or_empty(file);
            for n in &needles {
                assert!(
                    !contains(&bytes, n.as_bytes()),
                    "{when}: {n:?} found in {}",
                    file.display()
                );
            }
        }
    };
    {
        let mut s = open_with_audience(&path);
        let c = change("canary_user", Action::Create, 1, hashed.clone());
        let mut leaked = change("u2", Action::Create, 1, HashedPii::default());
        // A raw value smuggled into hashedPII is refused, never written.
        leaked.hashed_pii.email = Some(CANARY.to_lowercase());
        s.enqueue_batch(&[
            with_id(c.clone(), "canary-7f3e@example.com"),
            item(leaked),
            IncomingItem::DeadLetter(NewDeadLetter {
                source: DeadLetterSource::Http,
                reason: "consent_required".into(),
                message: "consent missing".into(),
                payload: Some(DeadLetterPayload {
                    external_user_id: Some(CANARY.into()),
                    audience_key: Some(CANARY.into()),
                    hashed_pii: vec![
                        hashed.clone(),
                        HashedPii {
                            email: Some(CANARY.into()),
                            ..HashedPii::default()
                        },
                    ],
                    ..DeadLetterPayload::default()
                }),
                message_id: None,
            }),
        ])
        .unwrap();
        let b = s.pending_batch(AUD, 10, 0).unwrap();
        assert_eq!(b[0].hashed_pii, std::slice::from_ref(&hashed));
        assert!(
            !read_or_empty(&wal).is_empty(),
            "data is in the WAL while open"
        );
        check("while open");
    }
    check("after close");
    drop(Store::open(&path).unwrap());
    check("after reopen");
}
