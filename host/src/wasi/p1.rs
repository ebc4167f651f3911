//! WASI preview 1 programs (`wasm32-wasip1` core modules), as `wasmtime
//! run` takes them: wrapped into a component with wasmtime's own preview 1
//! adapter, so that every call they make goes through the same preview 2
//! interfaces, and the same guards, as a component's.
//!
//! wasmtime-wasi also implements preview 1 directly, but that
//! implementation calls wasmtime-wasi's preview 2 host code itself, past
//! the guards linked in front of it: it is never used here.

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
};
use wasmtime::bail;
use wasmtime::error::Context;

/// Whether `bytes` is a core WebAssembly module rather than a component.
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// The component of a preview 1 command module: the module, its imports
/// from `wasi_snapshot_preview1` served by the adapter. A module that
/// imports anything else, or exports no `_start`, is refused, naming what
/// it is instead.
pub fn componentize(name: &str, module: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let (imports, has_start) =
        shape(module).with_context(|| format!("`{name}` is not a valid WebAssembly module"))?;
    if let Some(other) = imports
        .iter()
        .find(|m| m.as_str() != WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME)
    {
        bail!(
            "`{name}` is a core WebAssembly module that imports `{other}`: capbroker runs \
             core modules only as WASI preview 1 commands (importing only \
             `wasi_snapshot_preview1`); build it for wasm32-wasip2, or make it a component \
             with `wasm-tools component new`"
        );
    }
    if !has_start {
        bail!(
            "`{name}` is a core WebAssembly module without a `_start` export: capbroker runs \
             core modules only as WASI preview 1 commands"
        );
    }
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| {
            e.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| wasmtime::format_err!("{e:#}"))
        .with_context(|| format!("`{name}` cannot be adapted from WASI preview 1 into a component"))
}

/// The modules a core module imports from, and whether it exports `_start`.
fn shape(module: &[u8]) -> Result<(Vec<String>, bool), wasmparser::BinaryReaderError> {
    let mut imports = Vec::new();
    let mut has_start = false;
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload? {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let module = import?.module.to_string();
                    if !imports.contains(&module) {
                        imports.push(module);
                    }
                }
            }
            wasmparser::Payload::ExportSection(section) => {
                for export in section {
                    let export = export?;
                    has_start |=
                        export.name == "_start" && export.kind == wasmparser::ExternalKind::Func;
                }
            }
            _ => {}
        }
    }
    Ok((imports, has_start))
}
