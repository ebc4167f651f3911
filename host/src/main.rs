//! The `capbroker` command: runs a component with the handles the operator
//! grants it, and nothing else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use capbroker::grants::{describe_request, Grant, NamedGrant};
use capbroker::{Limits, Outcome, Runtime};
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

#[derive(Subcommand)]
enum Command {
    /// Run a component of capbroker's `app` world.
    #[command(trailing_var_arg = true)]
    Run {
        /// Grant a host directory as NAME=PATH[:RIGHTS]. RIGHTS is `ro`
        /// (read,list), `rw` (all, the default), `none`, or a comma-separated
        /// list of read, write, create, list, remove. May be repeated.
        #[arg(long = "dir", value_name = "NAME=PATH[:RIGHTS]", value_parser = Grant::parse_dir)]
        dirs: Vec<NamedGrant>,

        /// The most linear memory the component may use, e.g. 64MiB.
        #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
        max_memory: usize,

        /// The most handles (and WASI resources) the component may hold at once.
        #[arg(long, value_name = "N", default_value_t = Limits::default().max_handles as u64,
              value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
        max_handles: u64,

        /// The component (.wasm) to run.
        component: PathBuf,

        /// Arguments passed to the component's `run`.
        args: Vec<String>,
    },
    /// List the handles a component asks for, as the flags that grant them.
    Inspect {
        /// The component (.wasm) to inspect.
        component: PathBuf,
    },
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (expected e.g. 65536, 64KiB, 256MiB, 1GiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use KiB, MiB or GiB)"
            ))
        }
    };
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if size == 0 {
        return Err("a memory limit of zero would stop any component from starting".into());
    }
    Ok(size)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAPBROKER_LOG")
                .unwrap_or_else(|_| "capbroker=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("capbroker: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> wasmtime::Result<ExitCode> {
    match command {
        Command::Run {
            dirs,
            max_memory,
            max_handles,
            component,
            args,
        } => {
            for g in &dirs {
                g.grant
                    .check()
                    .with_context(|| format!("--dir {}", g.name))?;
            }
            let rt = Runtime::new()?;
            let app = rt.load(&component)?;
            let limits = Limits {
                max_memory,
                max_handles: max_handles as usize,
            };
            let mut running = app.start(&dirs, &limits).await?;
            match running.run(&args).await {
                Ok(Outcome::Ok) => Ok(ExitCode::SUCCESS),
                Ok(Outcome::Failed(msg)) => {
                    eprintln!("{}: error: {msg}", app.name());
                    Ok(ExitCode::from(1))
                }
                Ok(Outcome::Exit(code)) => Ok(ExitCode::from(code.clamp(1, 255) as u8)),
                Err(e) => {
                    eprintln!("{}: {e:#}", app.name());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Inspect { component } => {
            let rt = Runtime::new()?;
            let app = rt.load(&component)?;
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
