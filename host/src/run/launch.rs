//! Running a component from a [`Config`], as `capbroker run` does and as
//! the containerd shim does inside a container.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::bail;
use wasmtime::error::Context;

use super::app::{Outcome, Runtime};
use super::ctx::Components;
use super::engine::Pool;
use crate::core::audit::AuditLog;
use crate::core::learn::Learner;
use crate::core::limits::Limits;
use crate::grants::{Grant, NamedGrant};
use crate::net::Reach;
use crate::policy::Config;
use crate::run::app::Loaded;
use crate::run::command::{CommandComponent, CommandOutcome};
use crate::wasi::WasiGrants;

/// How a launch ended: the component ran, with this exit status, or it is
/// a `wasi:http/proxy` component to serve, handed back untouched.
pub enum Ran {
    Exit(u8),
    Proxy(Box<Launch>),
}

/// One run of a component: what is granted, and what is recorded.
pub struct Launch {
    pub config: Config,
    /// Write the audit log, as JSON Lines, to this file (`-` for stderr).
    pub audit: Option<PathBuf>,
    /// Learning mode: write the manifest of what the run used to this file.
    pub learn: Option<PathBuf>,
    /// The environment came with the container rather than from the
    /// operator: an app, which has no environment, runs without it instead
    /// of being refused.
    pub env_from_container: bool,
    /// Do not say on stderr which manifest the run uses.
    pub quiet: bool,
    /// Serve a `wasi:http/proxy` component (as `capbroker serve` does)
    /// rather than refuse it: the containerd shim's choice, for an image
    /// whose entrypoint is one.
    pub serve_proxies: bool,
}

impl Launch {
    /// Runs the component to its end and gives its exit status: 0, 1 for a
    /// failure or a trap (said on stderr), or the code a command exited
    /// with. An error is the operator's: a component that cannot be loaded,
    /// a grant that cannot be made.
    pub async fn run(self) -> wasmtime::Result<u8> {
        match self.start().await? {
            Ran::Exit(code) => Ok(code),
            Ran::Proxy(l) => bail!(
                "`{}` is a wasi:http proxy component: serve it with `capbroker serve`",
                l.config.component.unwrap_or_default().display()
            ),
        }
    }

    /// The instance pool of a run of `config`: what the operator's budgets
    /// allow alive at once, and no more: the root, and every spawner's
    /// max-children.
    pub fn pool(config: &Config) -> wasmtime::Result<Pool> {
        let spawners = config.grants.iter().filter_map(|g| match &g.grant {
            Grant::Spawner(s) => Some(s),
            _ => None,
        });
        Pool::for_budgets(config.limits().max_memory as u64, spawners).context("the instance pool")
    }

    /// [`Launch::run`], but a `wasi:http/proxy` component (with
    /// `serve_proxies`) is handed back, for the serve floor above to serve.
    pub async fn start(self) -> wasmtime::Result<Ran> {
        let Launch {
            config,
            audit,
            learn,
            env_from_container,
            quiet,
            serve_proxies,
        } = self;
        before_any_guest(&config, audit.as_deref(), learn.as_deref(), quiet)?;
        let Some(component) = config.component.clone() else {
            bail!(
                "no component to run: name one, or give a manifest (-m) with `component = \"...\"`"
            );
        };
        let limits = config.limits();
        let mut rt = Runtime::with_pool(&Launch::pool(&config)?)?;
        if !config.no_cache {
            rt.use_default_cache();
        }
        if let Some(path) = &audit {
            rt.set_audit_log(create_audit_log(path)?);
        }
        let app = match rt.load_any(&component)? {
            Loaded::App(app) => app,
            Loaded::Proxy(_) if serve_proxies => {
                // Served, by whoever started this launch (`serve` sits
                // above `run`): handed back as it came.
                return Ok(Ran::Proxy(Box::new(Launch {
                    config,
                    audit,
                    learn,
                    env_from_container,
                    quiet,
                    serve_proxies,
                })));
            }
            Loaded::Proxy(name) => bail!(
                "`{name}` is a wasi:http proxy component: serve it with `capbroker serve {name}`"
            ),
            Loaded::Command(command) => {
                if config
                    .grants
                    .iter()
                    .any(|g| matches!(g.grant, Grant::Spawner(_)))
                    || !config.components.is_empty()
                {
                    bail!(
                        "`{}` is a WASI command: spawners and --component are for capbroker apps",
                        command.name()
                    );
                }
                let code = run_command(command, &config, &limits, learn.as_deref()).await?;
                return Ok(Ran::Exit(code));
            }
        };
        if (!config.env.is_empty() && !env_from_container) || config.stdin {
            bail!(
                "--env and --stdin are for WASI commands; `{}` is a capbroker app",
                app.name()
            );
        }
        if !config.routes.is_empty() || config.addr.is_some() {
            bail!("[[route]] and [serve] are for `capbroker serve`, not `run`");
        }
        let mut registry = Components::new();
        registry.insert(app.name(), app.instance_pre().clone())?;
        for (name, path) in &config.components {
            let pre = rt
                .load_child(path)
                .with_context(|| format!("--component {name}"))?;
            registry
                .insert(name, pre)
                .with_context(|| format!("--component {name}"))?;
        }
        let mut app = app;
        let learner = learn.as_ref().map(|_| {
            let l = Learner::new();
            app.learn_with(l.clone());
            l
        });
        let mut running = app
            .start(&config.grants, &limits, Arc::new(registry))
            .await?;
        let outcome = running.run(&config.args).await;
        // What it asked for at its start, under the run's own limits: the
        // learned manifest keeps what it requires.
        let requests = running.requests().to_vec();
        drop(running);
        if let (Some(path), Some(learner)) = (&learn, &learner) {
            // Wait for children still running, so their use counts.
            learner.settle().await;
            let text = crate::policy::learned::manifest(learner, &config.absolute(), &requests)
                .context("--learn")?;
            write_learned(path, &text, matches!(outcome, Ok(Outcome::Ok)))?;
        }
        let code = match outcome {
            Ok(Outcome::Ok) => 0,
            Ok(Outcome::Failed(msg)) => {
                report(app.name(), &format!("error: {msg}"));
                1
            }
            Ok(Outcome::Exit(code)) => code.clamp(1, 255) as u8,
            Err(e) => {
                report(app.name(), &format!("{e:#}"));
                1
            }
        };
        Ok(Ran::Exit(code))
    }
}

/// What every run checks before any guest runs (`run`, and `serve` with
/// every route's grants in `config`), and the line that says which
/// manifest it uses.
pub(crate) fn before_any_guest(
    config: &Config,
    audit: Option<&std::path::Path>,
    learn: Option<&std::path::Path>,
    quiet: bool,
) -> wasmtime::Result<()> {
    // A guest that could write the manifest would choose its own grants
    // from the next run on.
    config.check_manifest_out_of_reach()?;
    config.check_grants_not_redirected()?;
    // The same for the files the broker writes for the operator: a guest
    // that could reach one could forge it, or plant a link that the broker
    // would follow to overwrite any file it may write.
    if let Some(path) = audit {
        // On stderr, the log would be mixed with the component's own
        // stderr, which could then write events the broker did not.
        if path.as_os_str() == "-" {
            bail!(
                "--audit -: the log would share stderr with the component, which could \
                 forge events in it; name a file (stderr still shows the warnings)"
            );
        }
        config.check_out_of_reach(path, "the --audit log")?;
    }
    if let Some(path) = learn {
        config.check_out_of_reach(path, "the --learn output")?;
        // Now, rather than after a run whose learning would be lost.
        check_writable(path)?;
    }
    check_outputs_apart(config, audit, learn)?;
    // A compiled artifact is machine code the broker runs outside any
    // sandbox: a guest that could write one would run its own code there
    // from the next run on.
    let components = config.components.iter().map(|(_, p)| p);
    for path in config.component.iter().chain(components) {
        if crate::run::compiled::is_artifact_file(path) {
            config.check_out_of_reach(path, "the compiled component")?;
        }
    }
    // The cache holds machine code the broker runs outside any sandbox: a
    // guest that could write its folder or key (or make them, where they
    // are not yet) could plant code that a later run loads. Every folder a
    // run of this user may keep it in is guarded, whether this run uses
    // the cache or not: a later run may.
    for dir in crate::run::cache::candidates() {
        let what = "the compiled-component cache";
        config
            .check_out_of_reach(&crate::run::cache::key_path(&dir), what)
            .and_then(|()| config.check_folder_out_of_reach(&dir, what))
            .context(
                "a guest must not be able to write the compiled-component cache, which later \
                 runs load machine code from: grant narrower folders (docs/cache.md)",
            )?;
    }
    if let (Some(m), false) = (&config.manifest, quiet) {
        // Not through `tracing`: no log filter may hide where grants come
        // from.
        let path = std::fs::canonicalize(&m.path).unwrap_or_else(|_| m.path.clone());
        eprintln!(
            "capbroker: grants and limits from the manifest {}",
            path.display()
        );
    }
    Ok(())
}

/// The files the broker writes are never ones it reads or the other one
/// it writes: the learned manifest would replace the component, a child
/// component, the operator's manifest or the audit log, and the audit log
/// would be appended to any of them.
fn check_outputs_apart(
    config: &Config,
    audit: Option<&Path>,
    learn: Option<&Path>,
) -> wasmtime::Result<()> {
    let mut read: Vec<(&Path, String)> = Vec::new();
    if let Some(c) = &config.component {
        read.push((c, "the component".into()));
    }
    for (name, path) in &config.components {
        read.push((path, format!("the component `{name}`")));
    }
    if let Some(m) = &config.manifest {
        read.push((&m.path, "the manifest".into()));
    }
    for (out, flag) in [(audit, "--audit"), (learn, "--learn")] {
        let Some(out) = out else { continue };
        for (input, what) in &read {
            if same_file(out, input) {
                bail!(
                    "{flag} {}: that is {what}, which writing there would destroy",
                    out.display()
                );
            }
        }
    }
    if let (Some(audit), Some(learn)) = (audit, learn) {
        if same_file(audit, learn) {
            bail!(
                "--learn {}: that is the --audit log, which the learned manifest would replace",
                learn.display()
            );
        }
    }
    Ok(())
}

/// Whether `a` and `b` are one file: the same inode through whatever links,
/// or, for a file not made yet, the same absolute path.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => std::path::absolute(a)
            .ok()
            .is_some_and(|a| std::path::absolute(b).ok() == Some(a)),
    }
}

/// Fails when the `--learn` output cannot be written at `path`; leaves
/// what is there (or nothing, if nothing was) as it was.
fn check_writable(path: &Path) -> wasmtime::Result<()> {
    let existed = std::fs::symlink_metadata(path).is_ok();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("--learn: cannot write `{}`", path.display()))?;
    if !existed {
        std::fs::remove_file(path)
            .with_context(|| format!("--learn: cannot remove `{}`", path.display()))?;
    }
    Ok(())
}

/// Writes the learned manifest `text` to `path`, and says so; a run that
/// did not succeed may not have reached all it needs.
fn write_learned(path: &Path, text: &str, succeeded: bool) -> wasmtime::Result<()> {
    write_private(path, text)?;
    if !succeeded {
        eprintln!(
            "capbroker: the run did not succeed: the manifest may lack what the rest of it needs"
        );
    }
    eprintln!("capbroker: wrote {}", path.display());
    Ok(())
}

/// Writes a learned manifest readable by its owner only: it holds the
/// environment variables granted, whose values may be secrets.
pub(crate) fn write_private(path: &Path, text: &str) -> wasmtime::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = || format!("--learn: cannot write `{}`", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(cannot)?;
    // A file that was there keeps its mode through `open`.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(cannot)?;
    file.write_all(text.as_bytes()).with_context(cannot)
}

/// Runs a plain WASI command and gives its exit status. With `learn`, it
/// records what the program uses (below each preopen, and through each
/// network grant) and writes the manifest of it however the run ends: an
/// exit, a trap, Ctrl-C or SIGTERM (status 130 or 143, as a shell gives).
async fn run_command(
    mut command: CommandComponent,
    config: &Config,
    limits: &Limits,
    learn: Option<&Path>,
) -> wasmtime::Result<u8> {
    let learner = learn.map(|_| {
        let l = Learner::new();
        command.learn_with(l.clone());
        l
    });
    let mut grants = wasi_grants(config.grants.clone(), config.env.clone(), config.stdin)?;
    grants.learn_with(learner.as_ref());
    let name = command.name();
    let run = command.run(&grants, &config.args, limits);
    let (Some(path), Some(learner)) = (learn, &learner) else {
        return Ok(status(name, run.await));
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let code = tokio::select! {
        ended = run => status(name, ended),
        _ = tokio::signal::ctrl_c() => 130,
        _ = term.recv() => 143,
    };
    let text = crate::policy::learned::command(learner, &config.absolute()).context("--learn")?;
    write_learned(path, &text, code == 0)?;
    Ok(code)
}

/// A command's exit status: 0, the code it exited with, or 1 for a trap,
/// said on stderr as `wasmtime run` reports one.
fn status(name: &str, ended: wasmtime::Result<CommandOutcome>) -> u8 {
    match ended {
        Ok(CommandOutcome::Success) => 0,
        Ok(CommandOutcome::Exit(code)) => code.clamp(1, 255) as u8,
        Err(e) => {
            report(name, &format!("{e:#}"));
            1
        }
    }
}

/// The `--audit` log, created at `path`.
pub(crate) fn create_audit_log(path: &std::path::Path) -> wasmtime::Result<Arc<AuditLog>> {
    let out: Box<dyn std::io::Write + Send> = Box::new(
        std::fs::File::create(path)
            .with_context(|| format!("--audit: cannot create `{}`", path.display()))?,
    );
    Ok(AuditLog::new(out))
}

/// The standard WASI grants of a command. Errors for a listen grant that
/// names a host, or a connect or UDP grant whose host cannot be looked up.
pub(crate) fn wasi_grants(
    grants: Vec<NamedGrant>,
    env: Vec<(String, String)>,
    stdin: bool,
) -> wasmtime::Result<WasiGrants> {
    let mut wasi = WasiGrants {
        env,
        stdin,
        ..WasiGrants::default()
    };
    for g in grants {
        let named = |e: &dyn std::fmt::Display| wasmtime::format_err!("grant `{}`: {e}", g.name);
        match &g.grant {
            Grant::Dir(d) => {
                // Refused here, before the program starts, rather than when
                // its preopens are made (an exit as if the program failed).
                let name = crate::fs::wasi::libc_name(&g.name);
                if let Some((other, _)) = wasi
                    .dirs
                    .iter()
                    .find(|(o, _)| crate::fs::wasi::libc_name(o) == name)
                {
                    bail!(
                        "--dir {} and --dir {other}: two directories granted at one guest path",
                        g.name
                    );
                }
                wasi.dirs.push((g.name.clone(), d.clone()))
            }
            Grant::Listen(n) => {
                let reach = Reach::listen(n).map_err(|e| named(&e))?;
                wasi.listen.push((g.name.clone(), reach));
            }
            Grant::Connect(n) => {
                let reach = Reach::connect(n).map_err(|e| named(&e))?;
                wasi.connect.push((g.name.clone(), reach));
            }
            Grant::Udp(n) => {
                let reach = Reach::connect(n).map_err(|e| named(&e))?;
                wasi.udp.push((g.name.clone(), reach));
            }
            Grant::Spawner(_) => {}
        }
    }
    Ok(wasi)
}

/// Says on stderr how a component ended (see [`crate::core::audit::say`]).
fn report(name: &str, message: &str) {
    crate::core::audit::say(&format!("{name}: "), message);
}
