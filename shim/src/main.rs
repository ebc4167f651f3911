//! `containerd-shim-capbroker-v1`: runs capbroker components as containers,
//! so that containerd (and Kubernetes through it) can schedule them.
//!
//! containerd starts this binary for the runtime `io.containerd.capbroker.v1`.
//! runwasi's library makes the container (namespaces, cgroups, the image's
//! root filesystem as `/`) and calls [`Sandbox::run_wasi`] inside it, so the
//! component, the manifest and every directory it grants are found in the
//! image, never on the node. A container whose entrypoint is a Linux
//! executable (a pod's pause container, say) runs as runc would run it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use capbroker::policy::Config;
use capbroker::run::launch::Launch;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{version, Cli, Shim, Version};

/// The manifest an image may carry; without it nothing is granted beyond
/// the entrypoint's arguments and the container's environment. It is the
/// image author's, honoured because the operator chose the image (as its
/// entrypoint is); as under `capbroker run -m`, a container whose grants
/// could write it (a writable grant of `/`, say) is refused, so that no
/// guest rewrites the grants of the container's next start.
const MANIFEST: &str = "/capbroker.toml";

/// The exit status of a container that capbroker could not start: the
/// reason is on its stderr, in the container's log.
const BROKER_ERROR: i32 = 2;

struct CapbrokerShim;

impl Shim for CapbrokerShim {
    type Sandbox = Broker;

    fn name() -> &'static str {
        "capbroker"
    }

    fn version() -> Version {
        version!()
    }

    /// None: the component is read from the image's root filesystem, where
    /// the entrypoint names it, so that the manifest beside it and the
    /// directories it grants come from the same place.
    fn supported_layers_types() -> &'static [&'static str] {
        &[]
    }
}

#[derive(Default)]
struct Broker;

impl Sandbox for Broker {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let launch = launch_for(ctx.args(), ctx.envs(), Path::new(MANIFEST));
        match launch.and_then(run) {
            Ok(code) => Ok(code.into()),
            Err(e) => {
                // The container's stderr is its log: `ctr`, `crictl logs`
                // and `kubectl logs` show this.
                capbroker::core::audit::say("capbroker: error: ", &format!("{e:#}"));
                Ok(BROKER_ERROR)
            }
        }
    }

    /// Every container that is not a Linux one is ours: one without a
    /// component to run fails in `run_wasi`, with the reason in its log,
    /// rather than at creation, where only the shim's log would say why.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The run the container asks for: the component its entrypoint names,
/// with the rest of its arguments and its environment, and the grants and
/// limits of `manifest` if the image has one.
fn launch_for(args: &[String], envs: &[String], manifest: &Path) -> anyhow::Result<Launch> {
    let (component, args) = args.split_first().context(
        "the container has no entrypoint: set the image's entrypoint to the component's path",
    )?;
    let env = envs
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let from_container = Config {
        component: Some(PathBuf::from(component)),
        args: args.to_vec(),
        env,
        // See `main`: an image is made fast by the compiled artifact
        // `capbroker-image` builds into it, once for every node.
        no_cache: true,
        ..Config::default()
    };
    let config = if manifest.is_file() {
        Config::load(manifest)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?
            .merge(from_container)
    } else {
        from_container
    };
    Ok(Launch {
        config,
        audit: None,
        learn: None,
        env_from_container: true,
        quiet: false,
        serve_proxies: true,
    })
}

/// Runs the component on a runtime of its own, the root as a task, as
/// `capbroker run` does: the shim's own runtime is not the place for it.
fn run(launch: Launch) -> anyhow::Result<u8> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        runtime
            .block_on(async { tokio::spawn(capbroker::serve::launch::run_or_serve(launch)).await })
            .context("the component's task failed")?
            .map_err(|e| anyhow::anyhow!("{e:#}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the component's thread panicked"))?
}

/// With `CAPBROKER_SHIM_TRACE=FILE` in containerd's environment, the shim
/// and the containers it starts append their `tracing` events (libcontainer's
/// among them) to FILE, for when containerd's log says too little.
fn trace_to_file() {
    let Some(path) = std::env::var_os("CAPBROKER_SHIM_TRACE") else {
        return;
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return;
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // Not `init`: that would also claim the `log` facade, which runwasi
    // sets up for containerd's own log.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn main() {
    trace_to_file();
    // A container's root filesystem goes with it: a cache in it would only
    // cost each start a write, and no later run could load from it.
    capbroker::run::cache::off_for_this_process();
    CapbrokerShim::run(None);
}
