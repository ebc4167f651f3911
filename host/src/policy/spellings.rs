//! wasmtime's spellings of capbroker's flags: `-W KEY=VALUE[,…]` and
//! `-S KEY[=VALUE][,…]` of `wasmtime run` and `wasmtime serve`, each read as
//! the capbroker limit or grant it stands for. An option capbroker has no
//! equivalent for is an error that says what to use instead: someone who
//! switched from wasmtime must never believe a setting took effect when it
//! did not.

use std::time::Duration;

use super::Config;

/// One `-W` or `-S` option, as the capbroker setting it stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum Spelling {
    /// `-W max-memory-size=N`: `--max-memory`.
    MaxMemory(usize),
    /// `-W fuel=N`: `--max-fuel`.
    MaxFuel(u64),
    /// `-W timeout=DURATION`: `--timeout`.
    Timeout(Duration),
    /// `-S max-resources=N`: `--max-handles`.
    MaxHandles(u64),
    /// `-S inherit-env`: every host variable, as `--env KEY` for each.
    InheritEnv(bool),
    /// `-S inherit-stdin`: `--stdin`.
    Stdin(bool),
    /// `-S http`: what `serve` always gives, and `run` never.
    Http(bool),
    /// What capbroker always gives (`-S cli`, `-S inherit-stdout`).
    Given,
}

/// The options of one `-W` or `-S` flag.
#[derive(Clone, Debug)]
pub struct Spellings(Vec<Spelling>);

/// A `-W` or `-S` option capbroker does not take, or a bad value.
#[derive(Debug, thiserror::Error)]
pub enum BadSpelling {
    #[error("unknown -{flag} option `{key}` (capbroker takes {takes})")]
    Unknown {
        flag: char,
        key: String,
        takes: &'static str,
    },
    #[error("-{flag} {key}: {instead}")]
    Elsewhere {
        flag: char,
        key: String,
        instead: &'static str,
    },
    #[error("-{flag} {key}: `{value}` is not {expected}")]
    Value {
        flag: char,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{spelled} and {ours} are both given, with different values: give one")]
    Twice {
        spelled: &'static str,
        ours: &'static str,
    },
    #[error(
        "-S inherit-env: the host's variable {0:?} is not UTF-8, which WASI's environment holds"
    )]
    NotUtf8(std::ffi::OsString),
    #[error("capbroker {command} does not take -{flag} {key}: {why}")]
    NotHere {
        command: &'static str,
        flag: char,
        key: &'static str,
        why: &'static str,
    },
}

const WASM_TAKES: &str = "max-memory-size=N, fuel=N and timeout=DURATION";
const WASI_TAKES: &str = "inherit-env, inherit-stdin, max-resources=N, and cli, inherit-stdout \
                          and inherit-stderr, which it always gives";

/// wasmtime's `-W` options that configure its engine, which capbroker
/// configures the same for every component.
const ENGINE: &[&str] = &[
    "nan-canonicalization",
    "epoch-interruption",
    "max-wasm-stack",
    "async-stack-size",
    "async-stack-zeroing",
    "wmemcheck",
    "trap-on-grow-failure",
    "all-proposals",
    "bulk-memory",
    "multi-memory",
    "multi-value",
    "reference-types",
    "simd",
    "relaxed-simd",
    "relaxed-simd-deterministic",
    "tail-call",
    "threads",
    "shared-memory",
    "shared-everything-threads",
    "memory64",
    "component-model",
    "component-model-async",
    "component-model-more-async-builtins",
    "component-model-async-stackful",
    "component-model-threading",
    "component-model-error-context",
    "component-model-gc",
    "component-model-map",
    "component-model-memory64",
    "function-references",
    "stack-switching",
    "gc",
    "custom-page-sizes",
    "wide-arithmetic",
    "branch-hinting",
    "extended-const",
    "exceptions",
    "gc-support",
    "component-model-fixed-length-lists",
    "component-model-implements",
    "concurrency-support",
];

/// wasmtime's `-S` options for WASI interfaces or settings capbroker does
/// not offer.
const UNOFFERED: &[&str] = &[
    "cli-exit-with-code",
    "nn",
    "threads",
    "http-outgoing-body-buffer-chunks",
    "http-outgoing-body-chunk-size",
    "config",
    "keyvalue",
    "listenfd",
    "tcplisten",
    "tls",
    "preview2",
    "nn-graph",
    "network-error-code",
    "preview0",
    "cwd",
    "config-var",
    "keyvalue-in-memory-data",
    "p3",
    "hostcall-fuel",
    "max-random-size",
    "max-http-fields-size",
];

impl Spellings {
    /// Parses the value of a `-W` flag: `KEY=VALUE[,…]`.
    pub fn parse_wasm(spec: &str) -> Result<Spellings, BadSpelling> {
        Self::parse('W', spec, |key, value| {
            let elsewhere = |instead| Err(Problem::Elsewhere(instead));
            Ok(match key {
                "max-memory-size" => Spelling::MaxMemory(size(value)?),
                "fuel" => Spelling::MaxFuel(number(value)?),
                "timeout" => Spelling::Timeout(duration(value)?),
                "max-instances" | "max-tables" | "max-memories" | "max-table-elements" => {
                    return elsewhere(
                        "capbroker bounds all of a component's memories together with \
                         --max-memory and its handles with --max-handles, and has no \
                         separate limit on instances, memories or tables",
                    )
                }
                "unknown-imports-trap" | "unknown-imports-default" | "unknown-exports-allow" => {
                    return elsewhere(
                        "capbroker links only the interfaces it grants, and no flag \
                         changes what it does with others",
                    )
                }
                k if ENGINE.contains(&k) => {
                    return elsewhere(
                        "capbroker configures the engine the same for every component \
                         (features, stacks, epochs), and no flag changes it",
                    )
                }
                _ => return Err(Problem::Unknown(WASM_TAKES)),
            })
        })
    }

    /// Parses the value of a `-S` flag: `KEY[=VALUE][,…]`.
    pub fn parse_wasi(spec: &str) -> Result<Spellings, BadSpelling> {
        Self::parse('S', spec, |key, value| {
            let elsewhere = |instead| Err(Problem::Elsewhere(instead));
            Ok(match key {
                "inherit-env" => Spelling::InheritEnv(yes(value)?),
                "inherit-stdin" => Spelling::Stdin(yes(value)?),
                "max-resources" => match number(value)? {
                    n @ 16..=1_000_000 => Spelling::MaxHandles(n),
                    _ => {
                        return Err(Problem::Value(
                            "a number from 16 to 1000000, as --max-handles",
                        ))
                    }
                },
                "http" => {
                    if !yes(value)? {
                        return elsewhere(
                            "capbroker always links wasi:http, its outgoing requests \
                             only within the --connect grants, and cannot take it away: \
                             grant no --connect to refuse every request",
                        );
                    }
                    Spelling::Http(true)
                }
                "cli" | "common" | "inherit-stdout" | "inherit-stderr" => {
                    if !yes(value)? {
                        return elsewhere(
                            "capbroker always gives wasi:cli, stdout and stderr (the \
                             rest of wasi:cli only as granted), and cannot take them away",
                        );
                    }
                    Spelling::Given
                }
                "inherit-network" | "tcp" | "udp" => {
                    return elsewhere(
                        "capbroker grants no ambient network: grant addresses with \
                         --connect and --listen (TCP) or --udp (UDP)",
                    )
                }
                "allow-ip-name-lookup" => {
                    return elsewhere(
                        "capbroker looks up only the host names a grant names: name them \
                         in --connect (docs/network.md)",
                    )
                }
                "max-component-handles" => {
                    return elsewhere("capbroker bounds a component's handles with --max-handles")
                }
                k if UNOFFERED.contains(&k) => {
                    return elsewhere("capbroker does not offer this, and no flag changes it")
                }
                _ => return Err(Problem::Unknown(WASI_TAKES)),
            })
        })
    }

    fn parse(
        flag: char,
        spec: &str,
        one: impl Fn(&str, Option<&str>) -> Result<Spelling, Problem>,
    ) -> Result<Spellings, BadSpelling> {
        spec.split(',')
            .map(|option| {
                let (key, value) = match option.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (option, None),
                };
                one(key, value).map_err(|problem| problem.of(flag, key, value))
            })
            .collect::<Result<_, _>>()
            .map(Spellings)
    }

    /// Sets in `config`, the flags of `capbroker {command}`, what the
    /// spellings stand for. A limit also set by capbroker's own flag must
    /// agree with it.
    pub fn apply(
        all: Vec<Spellings>,
        command: &'static str,
        config: &mut Config,
    ) -> Result<(), BadSpelling> {
        // Among wasmtime's options the last wins, as under wasmtime.
        let mut last = Spelled::default();
        for spelling in all.into_iter().flat_map(|s| s.0) {
            match spelling {
                Spelling::MaxMemory(n) => last.max_memory = Some(n),
                Spelling::MaxFuel(n) => last.max_fuel = Some(n),
                Spelling::Timeout(d) => last.timeout = Some(d),
                Spelling::MaxHandles(n) => last.max_handles = usize::try_from(n).ok(),
                Spelling::InheritEnv(on) => last.inherit_env = on,
                Spelling::Stdin(_) if command == "serve" => {
                    return Err(BadSpelling::NotHere {
                        command,
                        flag: 'S',
                        key: "inherit-stdin",
                        why: "a request's input is its body",
                    })
                }
                Spelling::Stdin(on) => last.stdin = Some(on),
                Spelling::Http(true) if command == "run" => {
                    return Err(BadSpelling::NotHere {
                        command,
                        flag: 'S',
                        key: "http",
                        why: "`capbroker serve` runs wasi:http/proxy components, each \
                              request's outgoing HTTP within its --connect grants",
                    })
                }
                Spelling::Http(_) | Spelling::Given => {}
            }
        }
        set(
            &mut config.max_memory,
            last.max_memory,
            "-W max-memory-size",
            "--max-memory",
        )?;
        set(&mut config.max_fuel, last.max_fuel, "-W fuel", "--max-fuel")?;
        set(&mut config.timeout, last.timeout, "-W timeout", "--timeout")?;
        set(
            &mut config.max_handles,
            last.max_handles,
            "-S max-resources",
            "--max-handles",
        )?;
        match last.stdin {
            Some(false) if config.stdin => {
                return Err(BadSpelling::Twice {
                    spelled: "-S inherit-stdin=n",
                    ours: "--stdin",
                })
            }
            Some(on) => config.stdin = on,
            None => {}
        }
        if last.inherit_env {
            // `--env` of the same name wins, as it does under wasmtime.
            let mut host = Vec::new();
            for (key, value) in std::env::vars_os() {
                let key = key.into_string().map_err(BadSpelling::NotUtf8)?;
                let value = value
                    .into_string()
                    .map_err(|_| BadSpelling::NotUtf8(key.clone().into()))?;
                if !config.env.iter().any(|(k, _)| *k == key) {
                    host.push((key, value));
                }
            }
            config.env.splice(0..0, host);
        }
        Ok(())
    }
}

/// What the `-W` and `-S` options of one command line set, the last of
/// each.
#[derive(Default)]
struct Spelled {
    max_memory: Option<usize>,
    max_fuel: Option<u64>,
    timeout: Option<Duration>,
    max_handles: Option<usize>,
    inherit_env: bool,
    stdin: Option<bool>,
}

/// Sets a limit from its wasmtime spelling, unless capbroker's flag set it
/// to something else.
fn set<T: PartialEq>(
    limit: &mut Option<T>,
    value: Option<T>,
    spelled: &'static str,
    ours: &'static str,
) -> Result<(), BadSpelling> {
    match (limit.as_ref(), value) {
        (Some(set), Some(value)) if *set != value => Err(BadSpelling::Twice { spelled, ours }),
        (_, Some(value)) => {
            *limit = Some(value);
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// What is wrong with one option, before it is known which.
enum Problem {
    Unknown(&'static str),
    Elsewhere(&'static str),
    Value(&'static str),
}

impl Problem {
    fn of(self, flag: char, key: &str, value: Option<&str>) -> BadSpelling {
        let key = key.to_string();
        match self {
            Problem::Unknown(takes) => BadSpelling::Unknown { flag, key, takes },
            Problem::Elsewhere(instead) => BadSpelling::Elsewhere { flag, key, instead },
            Problem::Value(expected) => BadSpelling::Value {
                flag,
                key,
                value: value.unwrap_or_default().to_string(),
                expected,
            },
        }
    }
}

/// wasmtime's booleans: nothing, `y`, `yes`, `true`; `n`, `no`, `false`.
fn yes(value: Option<&str>) -> Result<bool, Problem> {
    match value {
        None | Some("y" | "yes" | "true") => Ok(true),
        Some("n" | "no" | "false") => Ok(false),
        Some(_) => Err(Problem::Value("y, yes, true, n, no or false")),
    }
}

/// wasmtime's numbers: decimal or `0x` hex, `_` ignored.
fn number(value: Option<&str>) -> Result<u64, Problem> {
    const EXPECTED: &str = "a number (e.g. 1_000_000 or 0xf4240)";
    let digits = value.ok_or(Problem::Value(EXPECTED))?.replace('_', "");
    match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .map_err(|_| Problem::Value(EXPECTED))
}

/// A memory size: wasmtime's number of bytes, or capbroker's `64MiB`.
fn size(value: Option<&str>) -> Result<usize, Problem> {
    const EXPECTED: &str = "a size other than zero (e.g. 67108864 or 64MiB)";
    let n = match number(value) {
        Ok(n) => usize::try_from(n).map_err(|_| Problem::Value(EXPECTED))?,
        Err(_) => crate::core::limits::parse_size(value.unwrap_or_default())
            .map_err(|_| Problem::Value(EXPECTED))?,
    };
    if n == 0 {
        return Err(Problem::Value(EXPECTED));
    }
    Ok(n)
}

/// wasmtime's durations: seconds alone, or with `s`, `ms`, `us` (`μs`) or
/// `ns`; capbroker's `1m` too.
fn duration(value: Option<&str>) -> Result<Duration, Problem> {
    const EXPECTED: &str = "a duration (e.g. 10, 10s, 500ms, 1m)";
    let text = value.ok_or(Problem::Value(EXPECTED))?;
    type Make = fn(u64) -> Duration;
    let units: [(&str, Make); 5] = [
        ("ms", Duration::from_millis),
        ("us", Duration::from_micros),
        ("μs", Duration::from_micros),
        ("ns", Duration::from_nanos),
        ("s", Duration::from_secs),
    ];
    if let Ok(secs) = text.parse() {
        return Ok(Duration::from_secs(secs));
    }
    for (unit, make) in units {
        if let Some(n) = text.strip_suffix(unit).and_then(|n| n.parse().ok()) {
            return Ok(make(n));
        }
    }
    crate::core::limits::parse_duration(text).map_err(|_| Problem::Value(EXPECTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(spec: &str) -> Result<Vec<Spelling>, String> {
        Spellings::parse_wasm(spec)
            .map(|s| s.0)
            .map_err(|e| e.to_string())
    }

    fn wasi(spec: &str) -> Result<Vec<Spelling>, String> {
        Spellings::parse_wasi(spec)
            .map(|s| s.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn wasmtime_values_read_as_wasmtime_reads_them() {
        assert_eq!(
            wasm("max-memory-size=1_048_576,fuel=0x10,timeout=500ms").unwrap(),
            [
                Spelling::MaxMemory(1 << 20),
                Spelling::MaxFuel(16),
                Spelling::Timeout(Duration::from_millis(500)),
            ]
        );
        assert_eq!(
            wasm("max-memory-size=64MiB,timeout=10").unwrap(),
            [
                Spelling::MaxMemory(64 << 20),
                Spelling::Timeout(Duration::from_secs(10)),
            ]
        );
        assert_eq!(
            wasm("timeout=7us").unwrap(),
            [Spelling::Timeout(Duration::from_micros(7))]
        );
        assert_eq!(
            wasi("inherit-env,inherit-stdin=n,max-resources=64,cli=y").unwrap(),
            [
                Spelling::InheritEnv(true),
                Spelling::Stdin(false),
                Spelling::MaxHandles(64),
                Spelling::Given,
            ]
        );
    }

    #[test]
    fn bad_values_and_other_options_are_errors_naming_the_way() {
        type Parse = fn(&str) -> Result<Vec<Spelling>, String>;
        let cases: [(Parse, &str, &str); 13] = [
            (wasm, "fuel=lots", "-W fuel: `lots` is not a number"),
            (wasm, "fuel", "-W fuel: `` is not a number"),
            (wasm, "max-memory-size=0", "other than zero"),
            (wasm, "timeout=soon", "is not a duration"),
            (wasm, "simd=n", "-W simd: capbroker configures the engine"),
            (wasm, "fuel=1,turbo", "unknown -W option `turbo`"),
            (wasi, "inherit-network", "--connect and --listen"),
            (wasi, "udp=y", "--udp"),
            (wasi, "inherit-stdout=n", "cannot take them away"),
            (wasi, "inherit-env=maybe", "y, yes, true"),
            (wasi, "max-resources=3", "from 16 to 1000000"),
            (wasi, "fuel=1", "unknown -S option `fuel`"),
            (wasi, "cli,cwd=/", "-S cwd: capbroker does not offer this"),
        ];
        for (parse, spec, needle) in cases {
            let err = parse(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn a_limit_set_both_ways_must_agree() {
        let mut config = Config {
            max_fuel: Some(5),
            ..Config::default()
        };
        let same = vec![Spellings::parse_wasm("fuel=5").unwrap()];
        Spellings::apply(same, "run", &mut config).unwrap();
        let other = vec![Spellings::parse_wasm("fuel=6").unwrap()];
        let err = Spellings::apply(other, "run", &mut config).unwrap_err();
        assert!(err.to_string().contains("--max-fuel"), "{err}");
        assert_eq!(config.max_fuel, Some(5));
        // Among wasmtime's own options the last wins.
        let mut config = Config::default();
        let twice = vec![
            Spellings::parse_wasm("fuel=6,fuel=7").unwrap(),
            Spellings::parse_wasm("fuel=8").unwrap(),
        ];
        Spellings::apply(twice, "run", &mut config).unwrap();
        assert_eq!(config.max_fuel, Some(8));
        // --stdin and -S inherit-stdin=n disagree.
        let mut config = Config {
            stdin: true,
            ..Config::default()
        };
        let no = vec![Spellings::parse_wasi("inherit-stdin=n").unwrap()];
        let err = Spellings::apply(no, "run", &mut config).unwrap_err();
        assert!(err.to_string().contains("--stdin"), "{err}");
    }
}
