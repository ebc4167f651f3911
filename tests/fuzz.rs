//! The file-system fuzzer (`fuzz/`) on stable: its seed cases (each way
//! past a right the authority-core issue listed), the corpus libFuzzer
//! found (`fuzz/corpus/confinement/`), and a fixed pseudo-random sample,
//! each through the model oracle. `just fuzz` runs the coverage-guided
//! search; see docs/fuzzing.md.
//!
//! All of it runs twice, as the confinement tests do: as is, and in a child
//! process where `openat2` fails, so that cap-std's own resolver is
//! exercised as well.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use capbroker_fuzz::ops::{Input, MAX_OPS, OP_BYTES, SETUP_BYTES};
use capbroker_fuzz::{openat2, root, seeds, Harness};

fn harness() -> MutexGuard<'static, Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        capbroker_fuzz::guests::guests();
        Mutex::new(Harness::new().expect("load the guests"))
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_same_without_openat2() {
    drop(harness()); // build the guests here rather than in the child
    openat2::rerun("the_same_without_openat2");
}

#[test]
fn openat2_is_as_expected() {
    openat2::assert_openat2_as_expected();
}

#[test]
fn every_seed_passes_the_oracle() {
    let mut h = harness();
    let seeds = seeds::seeds();
    assert!(!seeds.is_empty());
    for (name, input) in seeds {
        if let Err(v) = h.run(&input) {
            panic!("seed `{name}`: {v}");
        }
    }
}

/// Every file of the corpus; `CAPBROKER_FUZZ_INPUT=FILE` replays that one
/// file instead (an artifact libFuzzer saved, say) and prints it.
#[test]
fn the_corpus_passes_the_oracle() {
    let dir = root().join("fuzz/corpus/confinement");
    let files: Vec<std::path::PathBuf> = match std::env::var_os("CAPBROKER_FUZZ_INPUT") {
        Some(one) => {
            let path = std::path::PathBuf::from(one);
            println!("{}", decode(&path));
            vec![path]
        }
        None => std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect(),
    };
    let mut h = harness();
    let mut n = 0;
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        if let Err(v) = h.run_bytes(&bytes) {
            panic!("{}: {v}", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
    println!("{n} corpus inputs, {:?}", h.stats);
}

/// A fixed sample of random inputs (`CAPBROKER_FUZZ_SAMPLE` sets how many),
/// so that the suite also covers what the corpus does not.
#[test]
fn a_random_sample_passes_the_oracle() {
    let count: u64 = std::env::var("CAPBROKER_FUZZ_SAMPLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut h = harness();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let start = Instant::now();
    let before = h.stats;
    for i in 0..count {
        let ops = 1 + (next() % MAX_OPS as u64) as usize;
        // Handles mostly from the first slots, which the grants fill.
        let mut bytes: Vec<u8> = (0..SETUP_BYTES).map(|_| next() as u8).collect();
        for _ in 0..ops {
            bytes.push(next() as u8);
            for i in 1..OP_BYTES {
                let r = next();
                let slot = i == 1 || i == 4;
                bytes.push(if slot && r % 4 != 0 {
                    ((r >> 8) % 3) as u8
                } else {
                    (r >> 8) as u8
                });
            }
        }
        if let Err(v) = h.run_bytes(&bytes) {
            let file = save_failure(&bytes);
            panic!("random input {i} (saved as {}): {v}", file.display());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{count} inputs ({} with grants the broker refused), {} operations ({} refusals predicted, {} allowed) in {secs:.1} s: {:.0} inputs/s",
        h.stats.refused_setups - before.refused_setups,
        h.stats.ops - before.ops,
        h.stats.predicted - before.predicted,
        h.stats.allowed - before.allowed,
        count as f64 / secs
    );
}

fn save_failure(bytes: &[u8]) -> std::path::PathBuf {
    let dir = root().join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("input-{:016x}", hash(bytes)));
    std::fs::write(&file, bytes).unwrap();
    file
}

fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn decode(path: &Path) -> Input {
    Input::decode(&std::fs::read(path).unwrap()).unwrap_or_else(|| Input {
        setup: capbroker_fuzz::ops::Setup::decode([0, 0]),
        ops: Vec::new(),
    })
}

/// The seed files in `fuzz/corpus/confinement/` are what `seeds()` says
/// (`CAPBROKER_FUZZ_WRITE_SEEDS=1` writes them anew).
#[test]
fn the_seed_files_match_the_seeds() {
    let dir = root().join("fuzz/corpus/confinement");
    if std::env::var_os("CAPBROKER_FUZZ_WRITE_SEEDS").is_some() {
        seeds::write_corpus(&dir).unwrap();
    }
    for (name, input) in seeds::seeds() {
        let file = dir.join(format!("seed-{name}"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (CAPBROKER_FUZZ_WRITE_SEEDS=1 writes it)",
                file.display()
            )
        });
        assert_eq!(bytes, input.encode(), "{} is stale", file.display());
    }
}
