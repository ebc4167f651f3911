//! `capbroker-image`: packs a component, its manifest and the files it
//! grants into an OCI image tarball for `ctr image import`, so that the
//! containerd shim can run it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use containerd_shim_capbroker::image::Image;

#[derive(Parser)]
#[command(version, about = "Build an OCI image tarball of a capbroker component")]
struct Cli {
    /// The image's name, e.g. docker.io/library/hello:latest.
    name: String,
    /// Where to write the tarball.
    out: PathBuf,
    /// The component; the image's entrypoint is `/<its file name>`.
    component: PathBuf,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut image = Image::new(&cli.name);
    let file_name = cli
        .component
        .file_name()
        .context("the component's path has no file name")?
        .to_string_lossy();
    let at = format!("/{file_name}");
    image.add(&at, read(&cli.component)?)?;
    image.entrypoint = std::iter::once(at).chain(cli.args).collect();
    if let Some(m) = &cli.manifest {
        image.add("/capbroker.toml", read(m)?)?;
    }
    for f in &cli.files {
        let (source, at) = f
            .split_once('=')
            .with_context(|| format!("--file `{f}` is not SOURCE=/PATH"))?;
        image.add(at, read(&PathBuf::from(source))?)?;
    }
    image.env = cli.env;
    let out = std::fs::File::create(&cli.out)
        .with_context(|| format!("cannot create `{}`", cli.out.display()))?;
    image.write(std::io::BufWriter::new(out))?;
    Ok(())
}
