//! OCI image tarballs for the shim: one layer holding the component, its
//! manifest and any files it grants, and a config whose entrypoint names
//! the component. `ctr image import` takes the result as it is.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image to build: files by their path in the image, and how to start.
#[derive(Default)]
pub struct Image {
    /// e.g. `docker.io/library/hello:latest`.
    pub name: String,
    /// Each file's bytes and mode.
    files: BTreeMap<PathBuf, (Vec<u8>, u32)>,
    /// The entrypoint: the component's path in the image, then arguments.
    pub entrypoint: Vec<String>,
    /// `KEY=VALUE`, as the image config's `Env`.
    pub env: Vec<String>,
}

impl Image {
    pub fn new(name: &str) -> Image {
        Image {
            name: name.to_string(),
            ..Image::default()
        }
    }

    /// Puts `bytes` at the absolute path `at` in the image.
    pub fn add(&mut self, at: &str, bytes: Vec<u8>) -> Result<&mut Image> {
        self.add_with_mode(at, bytes, 0o644)
    }

    /// Puts a program at `at`: a native one, for a container that is not a
    /// component (a pod's sandbox, say).
    pub fn add_executable(&mut self, at: &str, bytes: Vec<u8>) -> Result<&mut Image> {
        self.add_with_mode(at, bytes, 0o755)
    }

    fn add_with_mode(&mut self, at: &str, bytes: Vec<u8>, mode: u32) -> Result<&mut Image> {
        let path = Path::new(at);
        let relative = path
            .strip_prefix("/")
            .with_context(|| format!("`{at}`: paths in the image are absolute"))?;
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || relative.as_os_str().is_empty()
        {
            bail!("`{at}`: not a plain path to a file");
        }
        self.files.insert(relative.to_owned(), (bytes, mode));
        Ok(self)
    }

    /// Takes the file at `at` out of the image.
    pub fn remove(&mut self, at: &str) {
        if let Ok(relative) = Path::new(at).strip_prefix("/") {
            self.files.remove(relative);
        }
    }

    /// Writes the image as an OCI image layout tarball.
    pub fn write(&self, out: impl Write) -> Result<()> {
        if self.entrypoint.is_empty() {
            bail!("the image has no entrypoint");
        }
        let layer = self.layer()?;
        let layer_digest = digest(&layer);
        let (os, architecture) = ("linux", platform_architecture());
        let config = json!({
            "architecture": architecture,
            "os": os,
            "config": { "Entrypoint": self.entrypoint, "Env": self.env },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        });
        let config = serde_json::to_vec(&config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, &config),
            "layers": [descriptor(LAYER, &layer)],
        }))?;
        let tag = self.name.rsplit_once(':').map_or("latest", |(_, t)| t);
        let mut entry = descriptor(MANIFEST, &manifest);
        entry["annotations"] = json!({
            "io.containerd.image.name": self.name,
            "org.opencontainers.image.ref.name": tag,
        });
        entry["platform"] = json!({ "os": os, "architecture": architecture });
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [entry],
        }))?;

        let mut tar = tar::Builder::new(out);
        for blob in [&layer, &config, &manifest] {
            let path = format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]);
            append(&mut tar, &path, blob, 0o444)?;
        }
        append(&mut tar, "index.json", &index, 0o644)?;
        append(
            &mut tar,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        )?;
        tar.finish()?;
        Ok(())
    }

    /// The one layer: every file, with the folders above it.
    fn layer(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut folders = std::collections::BTreeSet::new();
        for path in self.files.keys() {
            for folder in path.ancestors().skip(1) {
                if !folder.as_os_str().is_empty() {
                    folders.insert(folder.to_owned());
                }
            }
        }
        for folder in &folders {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, folder, std::io::empty())?;
        }
        for (path, (bytes, mode)) in &self.files {
            append(&mut tar, &path.to_string_lossy(), bytes, *mode)?;
        }
        Ok(tar.into_inner()?)
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_mode(mode);
    h.set_size(bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
        .with_context(|| format!("cannot add `{path}` to the image"))
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest(bytes), "size": bytes.len() })
}

/// The node's architecture, as OCI names it: the component runs anywhere,
/// but containerd pulls and runs images for its own platform.
fn platform_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
