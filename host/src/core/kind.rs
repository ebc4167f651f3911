//! The life cycle every capability kind goes through, from the operator's
//! grant to the guest's handle:
//!
//! 1. **spec**: what the operator grants, as plain data ([`Kind::Spec`]),
//!    which the flags and `capbroker.toml` both parse into; in the
//!    manifest it is a table entry ([`Kind::Table`]), read and written by
//!    serde;
//! 2. **fit**: the spec narrowed to what the component asks for in its
//!    `requests` export ([`Kind::fit`]);
//! 3. **open**: the host handle, made once per instance and held for the
//!    guest's `grants.granted` ([`Kind::open`]);
//! 4. **hold** and **share**: a handle answers to the pledges of every
//!    instance it passes through ([`Handle::held_by`]), and a child gets a
//!    copy within its own budget ([`Handle::share`]);
//! 5. **narrow**: learning mode narrows the spec to what the run used
//!    ([`Kind::narrow`]);
//! 6. **link**: each kind's room adds its interfaces to a linker, its host
//!    functions working through a [`crate::core::View`].
//!
//! The registry in `grants/mod.rs` lists the kinds, one line each; it is
//! the only place that names them all.

use std::fmt::Debug;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::learn::{Learner, Used};
use super::pledges::Pledges;
use super::wit::capbroker::caps::types::Wants;
use super::Error;

/// A handle a guest can hold, and share with a child.
pub trait Handle: Sized + Send + 'static {
    /// A copy for a child process, within the child's `budget`. Fails if
    /// the handle was revoked.
    fn share(&self, to: &ShareTo<'_>) -> Result<Self, Error>;

    /// The same handle, also ended for good when the instance whose
    /// pledges these are pledges its kind of authority away.
    fn held_by(self, pledges: &Pledges) -> Self;
}

/// The child a handle is shared with.
pub struct ShareTo<'a> {
    /// The name the child knows the handle by.
    pub name: &'a str,
    /// The child's own limits: what a shared budget is cut to.
    pub max_memory: u64,
    pub max_fuel: u64,
    pub timeout_ms: u64,
}

/// A capability kind the operator grants.
pub trait Kind: 'static {
    /// Its name: the flag and the manifest table that grant it, and the
    /// case of `wants` that asks for it.
    const NAME: &'static str;
    /// What the operator grants.
    type Spec: Clone + Debug + Send + Sync;
    /// What the guest holds.
    type Handle: Handle;
    /// How `capbroker.toml` writes one grant of the kind: the entry under
    /// its table (`[dir.NAME]`, `listen.NAME`, …).
    type Table: Serialize + DeserializeOwned + Clone + Debug;

    /// The spec a manifest's entry `name` makes; host paths in it are
    /// relative to `base`, the manifest's folder.
    fn from_table(table: &Self::Table, name: &str, base: &Path) -> Result<Self::Spec, Located>;

    /// The entry that makes `spec` again.
    fn to_table(spec: &Self::Spec) -> Self::Table;

    /// The operator's `spec` narrowed to what the component `wants` (of this
    /// kind). Errors when the grant lacks what the component needs.
    fn fit(spec: &Self::Spec, name: &str, wants: &Wants) -> Result<Self::Spec, FitError>;

    /// Opens the host resource for the grant `name`. `peers` are every
    /// grant of this kind in the same run (this one among them), for what
    /// depends on the others.
    fn open(
        spec: &Self::Spec,
        name: &str,
        peers: &[&Self::Spec],
        env: &OpenEnv<'_>,
    ) -> wasmtime::Result<Opened<Self::Handle>>;

    /// Checks that the host resource can be opened, before anything is
    /// loaded, so that a bad grant is reported first and alone.
    fn check(_spec: &Self::Spec) -> wasmtime::Result<()> {
        Ok(())
    }

    /// How an operator grants what `wants` asks for under `name`, as a flag.
    fn describe(name: &str, wants: &Wants) -> String;

    /// `spec` narrowed to what the run used, or `None` to grant nothing.
    fn narrow(spec: &Self::Spec, name: &str, learned: &mut Learned<'_>) -> Option<Self::Spec>;
}

/// A grant that does not fit the component's request.
#[derive(Debug, thiserror::Error)]
#[error("grant `{name}`: {reason}")]
pub struct FitError {
    pub name: String,
    pub reason: String,
}

/// What opening a grant may consult.
pub struct OpenEnv<'a> {
    /// Learning mode's recorder, for the handle to note its uses.
    pub learner: Option<&'a Arc<Learner>>,
    /// The names of the components the broker can start.
    pub components: &'a [String],
}

/// An opened grant: the handle, and how the audit trail shows it.
pub struct Opened<H> {
    pub handle: H,
    /// What the handle reaches (a host path, `spawner`, …).
    pub target: String,
    /// Its rights or budget, in the operator's words.
    pub detail: String,
}

/// What learning saw, for [`Kind::narrow`].
pub struct Learned<'a> {
    pub used: &'a Used,
    /// Whether the component requires the grant (it is not optional).
    pub required: bool,
    /// What the component asks for under this grant's name.
    pub wants: Option<&'a Wants>,
    /// Comment lines for the written manifest, each starting with `# `.
    pub notes: &'a mut Vec<String>,
}

/// An error in a manifest's entry, and where in the file it is.
#[derive(Debug)]
pub struct Located {
    pub span: Range<usize>,
    pub message: String,
}

impl Located {
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Located {
        Located {
            span,
            message: message.into(),
        }
    }
}

/// `"read,list"` or `["read", "list"]`: a list a manifest may write either
/// way.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Words {
    One(String),
    Many(Vec<String>),
}

impl Words {
    pub fn joined(&self) -> String {
        match self {
            Words::One(s) => s.clone(),
            Words::Many(v) => v.join(","),
        }
    }
}

/// `"64MiB"` or `1000`: an amount a manifest may write as text or number.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    pub fn text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(s) => s.clone(),
        }
    }
}
