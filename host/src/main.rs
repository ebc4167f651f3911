//! The `capbroker` command: runs a component with the handles the operator
//! grants it, and nothing else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use capbroker::core::audit::report;
use capbroker::core::limits::parse_duration;
use capbroker::core::Invalid;
use capbroker::grants::{describe_request, Grant, NamedGrant};
use capbroker::policy::{Config, Spellings};
use capbroker::run::app::Loaded;
use capbroker::run::launch::Launch;
use capbroker::Runtime;
use clap::{Parser, Subcommand};
use wasmtime::error::Context;

#[derive(Parser)]
#[command(
    name = "capbroker",
    version,
    about = "A capability broker for WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Raises the soft limit on open files to the hard one: each guest may hold
/// up to about twice its handle table in host files (docs/confinement.md,
/// Limits), and the common soft limit of 1024 would let one guest use up
/// the host's.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct that outlives them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is no error.
fn out(text: &str) {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("capbroker: cannot write to stdout: {e}")
        }
        _ => {}
    }
}

/// `run`'s words with a `--` put right after the component's path, so that
/// every word after it is the component's own, as the help says — even one
/// that looks like capbroker's flag (`--dir`, `-m`, …): whoever supplies a
/// program's arguments must not be able to grant it anything. Which
/// options take a value is read from the parser's own definition.
fn component_args_apart(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let Some(run) = cli.find_subcommand("run") else {
        return argv;
    };
    let takes_value = |word: &str| {
        run.get_arguments().any(|a| {
            let named = match word.strip_prefix("--") {
                Some(long) => a.get_long() == Some(long),
                None => word.len() == 2 && a.get_short() == word.chars().nth(1),
            };
            named && a.get_action().takes_values()
        })
    };
    // The subcommand is the first word (capbroker has no global options):
    // a component or argument named `run` under another subcommand is not it.
    if argv.get(1).is_none_or(|w| w != "run") {
        return argv;
    }
    let mut i = 2;
    while i < argv.len() {
        // Bytes, not text: a word need not be UTF-8 (a path seldom is not).
        let word = argv[i].as_encoded_bytes();
        if word == b"--" {
            return argv;
        }
        if word.starts_with(b"-") && word != b"-" {
            // `--opt=value` carries its value; `--opt value` takes the next.
            let named = std::str::from_utf8(word).ok();
            let next = !word.contains(&b'=') && named.is_some_and(takes_value);
            i += if next { 2 } else { 1 };
            continue;
        }
        // The first plain word is the component (or, with a manifest that
        // names one, the first argument): everything after it is its own.
        argv.insert(i + 1, "--".into());
        return argv;
    }
    argv
}

// Parsed once per process: the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a component of capbroker's `app` world, or a plain `wasi:cli`
    /// command.
    #[command(trailing_var_arg = true)]
    Run {
        /// Grant a host directory as NAME=PATH[:RIGHTS], or in wasmtime's
        /// form HOST::GUEST[:RIGHTS] (GUEST is the name), or HOST (named by
        /// its own path). RIGHTS is `ro` (read,list), `rw` (all, the
        /// default), `none`, or a comma-separated list of read, write,
        /// create, list, remove. For a WASI command, the name is the guest
        /// path it is preopened at (`data`, `/data`, `.`). A name has no `=`
        /// or `:`, so a value with `::` is wasmtime's form (the first `::`
        /// ends HOST; a `:` after GUEST starts RIGHTS), one with `=`
        /// capbroker's, one with both is refused: a host path with `=` goes
        /// in the first form, one with `::` in a manifest. May be repeated.
        #[arg(long = "dir", value_name = "NAME=PATH[:RIGHTS]|HOST::GUEST[:RIGHTS]|HOST", value_parser = Grant::parse_dir)]
        dirs: Vec<NamedGrant>,

        /// Grant a spawner as NAME[=KEY=VALUE,...]. Keys: max-memory (per
        /// child, default 64MiB), max-fuel (per child, default 1G), timeout
        /// (per child, default 10s), max-children (alive at once, counting
        /// grandchildren; default 16), components (names joined by `+`;
        /// default all). May be repeated.
        #[arg(long = "spawn", value_name = "NAME[=KEY=VALUE,...]", value_parser = Grant::parse_spawn)]
        spawns: Vec<NamedGrant>,

        /// Grant the right to listen on addresses, as
        /// NAME=ADDRESS[/PREFIX]:PORT[-PORT][,...], e.g. web=127.0.0.1:8080.
        /// IPv6 addresses go in brackets: [::1]:8080. May be repeated.
        #[arg(long = "listen", value_name = "NAME=RANGE[,RANGE...]", value_parser = Grant::parse_listen)]
        listens: Vec<NamedGrant>,

        /// Grant the right to connect to addresses, as --listen, e.g.
        /// api=10.0.0.0/8:443, or to a host: api=example.com:443. A host
        /// name is looked up once, at start, and the grant reaches the
        /// addresses it resolved to; the broker looks up no other name.
        /// May be repeated.
        #[arg(long = "connect", value_name = "NAME=RANGE[,RANGE...]", value_parser = Grant::parse_connect)]
        connects: Vec<NamedGrant>,

        /// Grant the right to exchange UDP datagrams with peers, as
        /// --connect, e.g. dns=10.0.0.53:53: every datagram sent goes to,
        /// and every one received comes from, a peer in the ranges. A UDP
        /// socket binds 0.0.0.0:0 (or [::]:0) unless a --listen grant
        /// covers the address it binds. May be repeated.
        #[arg(long = "udp", value_name = "NAME=RANGE[,RANGE...]", value_parser = Grant::parse_udp)]
        udps: Vec<NamedGrant>,

        /// Give a WASI command the environment variable KEY, with VALUE or
        /// with the host's value. May be repeated.
        #[arg(long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
        envs: Vec<(String, String)>,

        /// Let a WASI command read the host's standard input.
        #[arg(long)]
        stdin: bool,

        /// Write the audit log, as JSON Lines, to FILE (not `-`: on stderr a
        /// component could write lines of its own into it):
        /// grants, derivations, drops, pledges, spawns, denials,
        /// revocations, limit hits and exits, for every process.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,

        /// Make the component at PATH spawnable under NAME. The component
        /// being run is spawnable under its file name (and as `self`).
        #[arg(long = "component", value_name = "NAME=PATH", value_parser = parse_component)]
        components: Vec<(String, PathBuf)>,

        /// The most fuel (about one unit per WebAssembly instruction) the
        /// component may use; unlimited by default.
        #[arg(long, value_name = "N")]
        max_fuel: Option<u64>,

        /// The most wall-clock time the component may run, e.g. 30s.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,

        /// The most linear memory the component may use, e.g. 64MiB
        /// (default 256MiB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<usize>,

        /// The most handles (and WASI resources) the component may hold at once.
        /// (Default 1024.)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
        max_handles: Option<u64>,

        /// wasmtime's -W options, as KEY=VALUE[,...]: max-memory-size=N
        /// (--max-memory), fuel=N (--max-fuel), timeout=DURATION (--timeout;
        /// `10` is seconds, also 10s, 500ms). Any other key is an error
        /// that says what to use instead.
        #[arg(short = 'W', long = "wasm", value_name = "KEY=VALUE[,...]", value_parser = Spellings::parse_wasm)]
        wasm: Vec<Spellings>,

        /// wasmtime's -S options, as KEY[=VALUE][,...]: inherit-env (every
        /// host variable; --env wins), inherit-stdin (--stdin),
        /// max-resources=N (--max-handles); cli, inherit-stdout and
        /// inherit-stderr are always given. No ambient network: not
        /// inherit-network, tcp or udp but --connect, --listen, --udp.
        #[arg(short = 'S', long = "wasi", value_name = "KEY[=VALUE][,...]", value_parser = Spellings::parse_wasi)]
        wasi: Vec<Spellings>,

        /// Read grants, limits and the component from this manifest. Flags
        /// add to it, or replace what has the same name. No manifest is
        /// read unless named here, and a run whose grants could write the
        /// manifest, or a folder on its path, is refused.
        #[arg(short = 'm', long, value_name = "FILE")]
        manifest: Option<PathBuf>,

        /// Compile the component without the compiled-component cache:
        /// nothing is read from it or written to it (docs/cache.md).
        #[arg(long)]
        no_cache: bool,

        /// Do not say on stderr which manifest the run uses, or that one
        /// beside the component is not used.
        #[arg(short = 'q', long)]
        quiet: bool,

        /// Learning mode: run as usual, record what the app and its
        /// children actually use, and write to FILE the manifest that grants
        /// only that (the paths used below each directory, with the rights
        /// used there; the addresses used; the components spawned, with
        /// twice their peak memory, fuel and time).
        #[arg(long, value_name = "FILE")]
        learn: Option<PathBuf>,

        /// Print the configuration the manifest and the flags make, as a
        /// manifest that says where each grant and limit came from, and run
        /// nothing.
        #[arg(long)]
        print_config: bool,

        /// The component (.wasm) to run. With -m and a manifest that names
        /// the component, this and every later word are arguments. A `--`
        /// before it ends capbroker's flags (needed only when the path, or
        /// with -m the first argument, starts with `-`).
        component: Option<PathBuf>,

        /// Arguments passed to the component (to an app's `run`, or as a
        /// command's argv after its name). Everything after the component's
        /// path is the component's, flags and `--` included.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Serve HTTP with a `wasi:http/proxy` component (the file `wasmtime
    /// serve` runs): a fresh instance per request, with the grants and
    /// limits of the route the request matches (`[[route]]` in the
    /// manifest), or, without routes, the flags' grants for every request.
    Serve {
        /// Read the component, the routes and the limits from this manifest.
        #[arg(short = 'm', long, value_name = "FILE")]
        manifest: Option<PathBuf>,

        /// The address to listen on (default 0.0.0.0:8080).
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<std::net::SocketAddr>,

        /// Preopen a host directory for every request, as GUEST=PATH[:RIGHTS],
        /// HOST::GUEST[:RIGHTS] or HOST, as `run --dir` (without [[route]]
        /// tables only). May be repeated.
        #[arg(long = "dir", value_name = "GUEST=PATH[:RIGHTS]|HOST::GUEST[:RIGHTS]|HOST", value_parser = Grant::parse_dir)]
        dirs: Vec<NamedGrant>,

        /// Let every request connect (sockets and outgoing HTTP) to these
        /// addresses, as `run --connect` (without [[route]] tables only).
        #[arg(long = "connect", value_name = "NAME=RANGE[,RANGE...]", value_parser = Grant::parse_connect)]
        connects: Vec<NamedGrant>,

        /// Give every request the environment variable KEY (without [[route]]
        /// tables only). May be repeated.
        #[arg(long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
        envs: Vec<(String, String)>,

        /// The most fuel each request may use.
        #[arg(long, value_name = "N")]
        max_fuel: Option<u64>,

        /// The most wall-clock time each request may take, body included.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,

        /// The most linear memory each request's instance may use (default
        /// 256MiB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<usize>,

        /// The most handles each request's instance may hold at once.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
        max_handles: Option<u64>,

        /// wasmtime's -W options for every request: max-memory-size=N,
        /// fuel=N, timeout=DURATION, as `run -W`.
        #[arg(short = 'W', long = "wasm", value_name = "KEY=VALUE[,...]", value_parser = Spellings::parse_wasm)]
        wasm: Vec<Spellings>,

        /// wasmtime's -S options for every request: inherit-env (without
        /// [[route]] tables only), max-resources=N; cli and http are always
        /// given. As `run -S`.
        #[arg(short = 'S', long = "wasi", value_name = "KEY[=VALUE][,...]", value_parser = Spellings::parse_wasi)]
        wasi: Vec<Spellings>,

        /// Write the audit log, as JSON Lines, to FILE: each request, its
        /// route, its denials and how it ended.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,

        /// Learning mode: serve as usual and, on Ctrl-C, write to FILE the
        /// route-scoped manifest of what the requests on each route used.
        #[arg(long, value_name = "FILE")]
        learn: Option<PathBuf>,

        /// Compile the component without the compiled-component cache:
        /// nothing is read from it or written to it (docs/cache.md).
        #[arg(long)]
        no_cache: bool,

        /// Say nothing on stderr but errors.
        #[arg(short = 'q', long)]
        quiet: bool,

        /// The `wasi:http/proxy` component (.wasm); with -m, the manifest's
        /// `component` unless given here.
        component: Option<PathBuf>,
    },
    /// Compile a component ahead of time, to a file that `run`, `serve`,
    /// `--component` and the containerd shim take in place of the `.wasm`
    /// (docs/cache.md#ahead-of-time-artifacts). It is machine code: run it
    /// only with the capbroker that made it, and keep it out of every grant
    /// that can write.
    Compile {
        /// The manifest of the runs the artifact is for: its budgets size
        /// the instance pool, which changes the code of a run that allows
        /// more than about 2,000 instances at once. Its `component` is
        /// compiled unless one is given here.
        #[arg(short = 'm', long, value_name = "FILE")]
        manifest: Option<PathBuf>,

        /// Where to write the artifact; the component's path with `.cwasm`
        /// when not given.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,

        /// The component (.wasm, a component or a WASI preview 1 module).
        component: Option<PathBuf>,
    },
    /// List the handles a component asks for, as the flags that grant them.
    Inspect {
        /// Compile the component without the compiled-component cache:
        /// nothing is read from it or written to it (docs/cache.md).
        #[arg(long)]
        no_cache: bool,

        /// The component (.wasm) to inspect.
        component: PathBuf,
    },
    /// Summarise an audit log written by `run --audit`: the process tree
    /// with grants and exits, and the denials grouped by kind.
    Audit {
        /// The JSON Lines file.
        file: PathBuf,
    },
}

fn parse_size(s: &str) -> Result<usize, Invalid> {
    let size = capbroker::core::limits::parse_size(s)?;
    if size == 0 {
        return Err(Invalid::Nothing(
            "a memory limit of zero would stop any component from starting",
        ));
    }
    Ok(size)
}

/// A `--env` value that gives no variable.
#[derive(Debug, thiserror::Error)]
enum BadEnv {
    #[error("`{0}` is not set in the host's environment")]
    Unset(String),
    #[error("`{0}` has an empty name")]
    NoName(String),
}

fn parse_env(s: &str) -> Result<(String, String), BadEnv> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (
            s.to_string(),
            std::env::var(s).map_err(|_| BadEnv::Unset(s.to_string()))?,
        ),
    };
    if key.is_empty() {
        return Err(BadEnv::NoName(s.to_string()));
    }
    Ok((key, value))
}

fn parse_component(s: &str) -> Result<(String, PathBuf), Invalid> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(Invalid::form(s, "NAME=PATH")),
    }
}

fn main() -> ExitCode {
    // Host errors a guest sees the text of (a `wasi:io` error's debug
    // string) must not carry a backtrace of the host: its paths and
    // versions are none of the guest's business. Panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAPBROKER_LOG")
                .unwrap_or_else(|_| "capbroker=warn".into()),
        )
        .init();
    raise_file_limit();
    let cli = Cli::parse_from(component_args_apart(std::env::args_os().collect()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    // The root component runs as a task, like its children: a child then
    // starts on the parent's worker thread, and waking the parent when it
    // ends is a local reschedule rather than a cross-thread wake-up.
    let root = runtime.block_on(async { tokio::spawn(dispatch(cli.command)).await });
    // The run is over: a host thread still blocked in a system call (no
    // guest can make one, but should one be) must not keep the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match root.unwrap_or_else(|e| Err(wasmtime::format_err!("the host task failed: {e}"))) {
        Ok(code) => code,
        Err(e) => {
            // An error before a run can carry a guest's text too (a trap
            // in its start functions or `requests`).
            capbroker::core::audit::say("capbroker: error: ", &format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> wasmtime::Result<ExitCode> {
    match command {
        Command::Run {
            dirs,
            spawns,
            listens,
            connects,
            udps,
            components,
            envs,
            stdin,
            audit,
            manifest,
            no_cache,
            quiet,
            learn,
            print_config,
            max_memory,
            max_handles,
            max_fuel,
            timeout,
            wasm,
            wasi,
            component,
            args,
        } => {
            for g in &dirs {
                g.grant
                    .check()
                    .with_context(|| format!("--dir {}", g.name))?;
            }
            let mut flags = Config {
                component,
                args,
                grants: dirs
                    .into_iter()
                    .chain(spawns)
                    .chain(listens)
                    .chain(connects)
                    .chain(udps)
                    .collect(),
                components,
                env: envs,
                stdin,
                no_cache,
                max_memory,
                max_handles: max_handles.map(|n| n as usize),
                max_fuel,
                timeout,
                manifest: None,
                addr: None,
                routes: Vec::new(),
            };
            Spellings::apply(wasm.into_iter().chain(wasi).collect(), "run", &mut flags)?;
            // Only the operator names a manifest: one found beside the
            // component may have been written by a guest granted that
            // folder, to choose its own grants for this run.
            if manifest.is_none() && !quiet {
                if let Some(beside) = flags.component.as_ref().and_then(|c| c.parent()) {
                    let beside = beside.join("capbroker.toml");
                    if beside.is_file() {
                        eprintln!(
                            "capbroker: not using {}: a manifest is read only when named with -m",
                            beside.display()
                        );
                    }
                }
            }
            let config = match &manifest {
                Some(path) => {
                    let from_file = Config::load(path)?;
                    let mut flags = flags;
                    // With a manifest that names the component, every word
                    // after the flags is an argument.
                    if from_file.component.is_some() {
                        if let Some(first) = flags.component.take() {
                            flags.args.insert(0, first.to_string_lossy().into_owned());
                        }
                    }
                    from_file.merge(flags)
                }
                None => flags,
            };
            if let Some(name) = config.twice_granted() {
                wasmtime::bail!("grant `{name}` is given twice");
            }
            if let Some(key) = config.env_twice() {
                wasmtime::bail!("--env {key} is given twice");
            }
            if print_config {
                out(&config.absolute().to_toml_with_origins()?);
                return Ok(ExitCode::SUCCESS);
            }
            let code = Launch {
                config,
                audit,
                learn,
                env_from_container: false,
                quiet,
                serve_proxies: false,
            }
            .run()
            .await?;
            Ok(ExitCode::from(code))
        }
        Command::Serve {
            manifest,
            addr,
            dirs,
            connects,
            envs,
            max_fuel,
            timeout,
            max_memory,
            max_handles,
            wasm,
            wasi,
            audit,
            learn,
            no_cache,
            quiet,
            component,
        } => {
            for g in &dirs {
                g.grant
                    .check()
                    .with_context(|| format!("--dir {}", g.name))?;
            }
            let mut flags = Config {
                component,
                grants: dirs.into_iter().chain(connects).collect(),
                env: envs,
                max_memory,
                max_handles: max_handles.map(|n| n as usize),
                max_fuel,
                timeout,
                addr,
                no_cache,
                ..Config::default()
            };
            Spellings::apply(wasm.into_iter().chain(wasi).collect(), "serve", &mut flags)?;
            let config = match &manifest {
                Some(path) => Config::load(path)?.merge(flags),
                None => flags,
            };
            capbroker::serve::Serve {
                config,
                audit,
                learn,
                quiet,
            }
            .run()
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            let summary = report::summarise(&file.display().to_string(), &text)?;
            out(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile {
            manifest,
            output,
            component,
        } => {
            let flags = Config {
                component,
                ..Config::default()
            };
            // Only what decides the code: the manifest's grants may name
            // folders of the machine the artifact is for.
            let config = match &manifest {
                Some(path) => Config::budgets(path)?.merge(flags),
                None => flags,
            };
            let artifact = capbroker::run::compiled::compile(&config)?;
            let component = config.component.unwrap_or_default();
            let output = output
                .unwrap_or_else(|| component.with_extension(capbroker::run::compiled::EXTENSION));
            // Replacing the component with its own artifact would lose the
            // only copy of the WebAssembly.
            if std::fs::canonicalize(&output).ok() == std::fs::canonicalize(&component).ok()
                && output.exists()
            {
                wasmtime::bail!(
                    "-o `{}` is the component itself: write the artifact elsewhere",
                    output.display()
                );
            }
            capbroker::run::compiled::write(&output, &artifact)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            no_cache,
            component,
        } => {
            let mut rt = Runtime::new()?;
            if !no_cache {
                rt.use_default_cache();
            }
            let app = match rt.load_any(&component)? {
                Loaded::App(app) => app,
                Loaded::Proxy(name) => {
                    println!(
                        "{name} is a wasi:http proxy component: `capbroker serve` runs it, a \
                         fresh instance per request, with the grants of the route each \
                         request matches (docs/serve.md)"
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Loaded::Command(command) => {
                    println!(
                        "{} is a plain WASI command (wasi:cli/run): it gets nothing unless \
                         granted. It imports:",
                        command.name()
                    );
                    for what in command.wants() {
                        println!("  {what}");
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let requests = app.requests().await?;
            if requests.is_empty() {
                println!("{} asks for no handles", app.name());
            }
            for r in &requests {
                println!("{}", describe_request(r));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
