//! `capbroker-image`: packs a component, its manifest and the files it
//! grants into an OCI image tarball for `ctr image import`, so that the
//! containerd shim can run it.
//!
//! The component goes in compiled (`capbroker compile`'s artifact), so no
//! node compiles it again at each container's start; `--no-compile` puts
//! the `.wasm` itself, for nodes with another CPU or capbroker version.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capbroker::policy::Config;
use capbroker::run::compiled;
use clap::Parser;
use containerd_shim_capbroker::image::Image;

#[derive(Parser)]
#[command(version, about = "Build an OCI image tarball of a capbroker component")]
struct Cli {
    /// The image's name, e.g. docker.io/library/hello:latest.
    name: String,
    /// Where to write the tarball.
    out: PathBuf,
    /// The component; the image's entrypoint is `/<its file name>`, with
    /// `.cwasm` for its compiled artifact.
    component: PathBuf,
    /// Put the `.wasm` in the image rather than its compiled artifact: each
    /// container then compiles it at its start (about 0.4 s for a small
    /// Rust component), but the image runs on any node's capbroker and CPU.
    /// The artifact is made for this machine's capbroker, wasmtime and CPU
    /// features, and a node that differs refuses it with a clear error.
    #[arg(long)]
    no_compile: bool,
    /// A manifest (grants and limits), put at /capbroker.toml.
    #[arg(short = 'm', long)]
    manifest: Option<PathBuf>,
    /// Another file for the image, as SOURCE=/PATH. May be repeated.
    #[arg(long = "file", value_name = "SOURCE=/PATH")]
    files: Vec<String>,
    /// An environment variable of the image, as KEY=VALUE. May be repeated.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Arguments after the component's path in the entrypoint.
    #[arg(last = true)]
    args: Vec<String>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))
}

/// The component's artifact, for the pool a container of the image gets:
/// the manifest's budgets size it, as the shim's run does. Only those are
/// read here; its other grants name paths in the image, not on this
/// machine.
fn compile(cli: &Cli) -> Result<Vec<u8>> {
    let flags = Config {
        component: Some(cli.component.clone()),
        ..Config::default()
    };
    let config = match &cli.manifest {
        Some(m) => Config::budgets(m)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?
            .merge(flags),
        None => flags,
    };
    compiled::compile(&config)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("cannot compile the component (--no-compile puts the .wasm in the image)")
}

fn main() -> std::process::ExitCode {
    match build(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capbroker-image: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn build(cli: Cli) -> Result<()> {
    let mut image = Image::new(&cli.name);
    let file_name = cli
        .component
        .file_name()
        .context("the component's path has no file name")?
        .to_string_lossy();
    let (at, bytes) = if cli.no_compile {
        let bytes = read(&cli.component)?;
        if compiled::is_artifact(&bytes) {
            anyhow::bail!(
                "`{}` is machine code, not WebAssembly: --no-compile takes the `.wasm`",
                cli.component.display()
            );
        }
        (format!("/{file_name}"), bytes)
    } else {
        let at = Path::new("/")
            .join(file_name.as_ref())
            .with_extension(compiled::EXTENSION);
        (at.display().to_string(), compile(&cli)?)
    };
    // Each path in the image once: a later file silently replacing the
    // component or the manifest would be an image other than the one asked
    // for.
    let mut placed: Vec<(PathBuf, String)> = Vec::new();
    let mut place = |at: &str, what: String| -> Result<()> {
        let key = Path::new(at).components().collect::<PathBuf>();
        if let Some((_, first)) = placed.iter().find(|(p, _)| *p == key) {
            anyhow::bail!("{what} and {first} would both be `{at}` in the image");
        }
        placed.push((key, what));
        Ok(())
    };
    place(&at, "the component".into())?;
    image.add(&at, bytes)?;
    image.entrypoint = std::iter::once(at).chain(cli.args).collect();
    if let Some(m) = &cli.manifest {
        place("/capbroker.toml", "the manifest (-m)".into())?;
        image.add("/capbroker.toml", read(m)?)?;
    }
    for f in &cli.files {
        let (source, at) = f
            .split_once('=')
            .with_context(|| format!("--file `{f}` is not SOURCE=/PATH"))?;
        place(at, format!("--file `{f}`"))?;
        image.add(at, read(&PathBuf::from(source))?)?;
    }
    image.env = cli.env;
    let out = std::fs::File::create(&cli.out)
        .with_context(|| format!("cannot create `{}`", cli.out.display()))?;
    image.write(std::io::BufWriter::new(out))?;
    Ok(())
}
