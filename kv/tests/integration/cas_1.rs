//! Stage 1: the raw compare-and-swap, over every storage, through the raw API and the service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kv::{Cas, CasOutcome, Cf, Error, MemoryStorage, RawApi, RawLimits};
use kv::{StandaloneStorage, Storage};
use proto::kvrpcpb::Context;

/// Runs `check` against the raw API over a fresh instance of every storage.
fn each_api(limits: RawLimits, check: impl Fn(&str, &dyn Fn() -> Api)) {
    let memory = Arc::new(MemoryStorage::new());
    check("memory", &|| {
        Api::Memory(RawApi::new(memory.clone(), limits.clone()))
    });
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(StandaloneStorage::open(dir.path(), false).unwrap());
    check("standalone", &|| {
        Api::Standalone(RawApi::new(disk.clone(), limits.clone()))
    });
}

/// The raw API over one of the storages.
enum Api {
    Memory(RawApi<MemoryStorage>),
    Standalone(RawApi<StandaloneStorage>),
}

impl Api {
    fn cas(
        &self,
        cf: &str,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> kv::Result<Outcome> {
        let ctx = Context::default();
        let (key, expect, value) = (key.to_vec(), expect.map(<[u8]>::to_vec), value.to_vec());
        let out = match self {
            Api::Memory(a) => a.compare_and_swap(&ctx, cf, key, expect, value, 0),
            Api::Standalone(a) => a.compare_and_swap(&ctx, cf, key, expect, value, 0),
        }?;
        Ok(Outcome::from(out))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Option<Vec<u8>> {
        let ctx = Context::default();
        match self {
            Api::Memory(a) => a.get(&ctx, cf, key),
            Api::Standalone(a) => a.get(&ctx, cf, key),
        }
        .unwrap()
    }

    fn put(&self, key: &[u8], value: &[u8]) {
        let ctx = Context::default();
        let (key, value) = (key.to_vec(), value.to_vec());
        match self {
            Api::Memory(a) => a.put(&ctx, "default", key, value),
            Api::Standalone(a) => a.put(&ctx, "default", key, value),
        }
        .unwrap()
    }
}

/// A [`CasOutcome`] that compares with short literals.
#[derive(Debug, PartialEq, Eq)]
struct Outcome(bool, Option<String>);

impl From<CasOutcome> for Outcome {
    fn from(o: CasOutcome) -> Outcome {
        let previous = o.previous.map(|v| String::from_utf8_lossy(&v).into_owned());
        Outcome(o.succeed, previous)
    }
}

fn swapped(previous: Option<&str>) -> Outcome {
    Outcome(true, previous.map(str::to_string))
}

fn refused(previous: Option<&str>) -> Outcome {
    Outcome(false, previous.map(str::to_string))
}

#[test]
fn cas_swaps_only_on_an_exact_match_1() {
    each_api(RawLimits::default(), |name, api| {
        let a = api();
        // Absent, expected absent: set.
        assert_eq!(
            a.cas("", b"k", None, b"1").unwrap(),
            swapped(None),
            "{name}"
        );
        assert_eq!(a.get("", b"k").as_deref(), Some(&b"1"[..]), "{name}");
        // Expected absent, but present: refused, nothing written, the value returned.
        assert_eq!(
            a.cas("", b"k", None, b"x").unwrap(),
            refused(Some("1")),
            "{name}"
        );
        // The right previous value: swapped.
        let out = a.cas("default", b"k", Some(b"1"), b"2").unwrap();
        assert_eq!(out, swapped(Some("1")), "{name}");
        // A stale previous value: refused, nothing written.
        let out = a.cas("default", b"k", Some(b"1"), b"3").unwrap();
        assert_eq!(out, refused(Some("2")), "{name}");
        assert_eq!(a.get("", b"k").as_deref(), Some(&b"2"[..]), "{name}");
        // An expected value on an absent key: refused, and the key stays absent.
        let out = a.cas("", b"nothing", Some(b""), b"v").unwrap();
        assert_eq!(out, refused(None), "{name}");
        assert_eq!(a.get("", b"nothing"), None, "{name}");
        // The empty value is a value, not an absence.
        a.put(b"empty", b"");
        assert_eq!(
            a.cas("", b"empty", None, b"v").unwrap(),
            refused(Some("")),
            "{name}"
        );
        let out = a.cas("", b"empty", Some(b""), b"v").unwrap();
        assert_eq!(out, swapped(Some("")), "{name}");
        // Column families are separate key spaces.
        assert_eq!(
            a.cas("lock", b"k", None, b"l").unwrap(),
            swapped(None),
            "{name}"
        );
        assert_eq!(a.get("lock", b"k").as_deref(), Some(&b"l"[..]), "{name}");
        assert_eq!(a.get("default", b"k").as_deref(), Some(&b"2"[..]), "{name}");
    });
}

#[test]
fn cas_validates_like_a_put_1() {
    let limits = RawLimits {
        max_key_size: 4,
        max_value_size: 4,
        ..RawLimits::default()
    };
    each_api(limits, |name, api| {
        let a = api();
        let invalid = |r: kv::Result<Outcome>, what: &str| match r {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(what), "{name}: {m}"),
            other => panic!("{name}: expected an invalid argument ({what}), got {other:?}"),
        };
        invalid(a.cas("", b"", None, b"v"), "empty");
        invalid(a.cas("", b"12345", None, b"v"), "key of 5 bytes");
        invalid(a.cas("", b"k", None, b"12345"), "value of 5 bytes");
        invalid(
            a.cas("", b"k", Some(b"12345"), b"v"),
            "expected value of 5 bytes",
        );
        match a.cas("bogus", b"k", None, b"v") {
            Err(Error::UnknownCf(cf)) => assert_eq!(cf, "bogus", "{name}"),
            other => panic!("{name}: expected an unknown cf, got {other:?}"),
        }
        // Nothing was written by the refused calls; values at the limits are accepted.
        assert_eq!(a.get("", b"k"), None, "{name}");
        let out = a.cas("", b"1234", None, b"1234").unwrap();
        assert_eq!(out, swapped(None), "{name}");
        let out = a.cas("", b"1234", Some(b"1234"), b"").unwrap();
        assert_eq!(out, swapped(Some("1234")), "{name}");
    });
}

/// Threads increment one counter with read, CAS old → old + 1, retry: if two swaps from the
/// same value could both succeed, the counter would end below the number of successes.
#[test]
fn concurrent_cas_increments_lose_nothing_1() {
    const THREADS: u64 = 4;
    const EACH: u64 = 150;
    each_api(RawLimits::default(), |name, api| {
        let successes = AtomicU64::new(0);
        let refusals = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                let a = api();
                let (successes, refusals) = (&successes, &refusals);
                s.spawn(move || {
                    let mut done = 0;
                    let mut seen = a.get("", b"counter");
                    while done < EACH {
                        let next = match &seen {
                            None => 1,
                            Some(v) => std::str::from_utf8(v).unwrap().parse::<u64>().unwrap() + 1,
                        };
                        let out = a
                            .cas("", b"counter", seen.as_deref(), next.to_string().as_bytes())
                            .unwrap();
                        if out.0 {
                            done += 1;
                            successes.fetch_add(1, Ordering::Relaxed);
                            seen = Some(next.to_string().into_bytes());
                        } else {
                            refusals.fetch_add(1, Ordering::Relaxed);
                            // The refusal says what the key holds: retry from there.
                            seen = out.1.map(String::into_bytes);
                        }
                    }
                });
            }
        });
        let total = THREADS * EACH;
        assert_eq!(successes.load(Ordering::Relaxed), total, "{name}");
        let counter = api().get("", b"counter").expect("the counter exists");
        assert_eq!(
            String::from_utf8(counter).unwrap(),
            total.to_string(),
            "{name}: {} swaps succeeded ({} refused)",
            total,
            refusals.load(Ordering::Relaxed)
        );
    });
}

/// A storage's own CAS, without the raw API: `Storage::compare_and_swap` on each storage.
#[test]
fn storage_cas_writes_only_when_it_succeeds_1() {
    let dir = tempfile::tempdir().unwrap();
    let storages: Vec<Box<dyn Storage>> = vec![
        Box::new(MemoryStorage::new()),
        Box::new(StandaloneStorage::open(dir.path(), false).unwrap()),
    ];
    for s in storages {
        let ctx = Context::default();
        let cas = |expect: Option<&[u8]>, value: &[u8]| Cas {
            cf: Cf::Write,
            key: b"w".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            value: value.to_vec(),
            now_ms: 0,
        };
        assert!(s.compare_and_swap(&ctx, cas(None, b"a")).unwrap().succeed);
        let out = s.compare_and_swap(&ctx, cas(Some(b"b"), b"c")).unwrap();
        assert_eq!(
            out,
            CasOutcome {
                succeed: false,
                previous: Some(b"a".to_vec())
            }
        );
        let r = s.reader(&ctx).unwrap();
        assert_eq!(
            r.get_cf(Cf::Write, b"w").unwrap().as_deref(),
            Some(&b"a"[..])
        );
        assert_eq!(r.get_cf(Cf::Default, b"w").unwrap(), None);
    }
}
