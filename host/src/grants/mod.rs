//! The registry of capability kinds, and the `grants` interface: how an
//! operator's grant becomes a guest's handle.
//!
//! Every kind goes through the same life cycle ([`crate::core::kind`]);
//! `with_kinds!` below is the one place that lists the kinds, one line
//! each; the enums that hold a grant or a handle of any kind, the dispatch
//! from them to each kind's own code, and the manifest's tables are all
//! made from that list. Adding a kind is its room, its WIT, and one line
//! here (see `docs/adding-a-kind.md`).
//!
//! A run's grants go:
//! 1. from the policy (flags, manifest) as [`NamedGrant`]s;
//! 2. fitted to what the component asks for in its `requests` export
//!    ([`fit`]): a grant the component did not ask for is an error, and a
//!    grant with more authority than asked for is narrowed to the request;
//! 3. opened ([`open`]) and kept in the store's [`GrantsCtx`];
//! 4. taken by the guest with `grants.granted`, which pushes every pending
//!    handle into the store's table once, held by the instance's pledges.

pub mod wit;

use std::collections::HashSet;

use wasmtime::component::{Linker, ResourceTable, ResourceTableError};
use wasmtime::error::Context as _;

pub use self::wit::grants::{Grant as GuestGrant, Handle as GuestHandle, Share, Shared};
pub use crate::core::wit::capbroker::caps::types::{Request, Wants};

use crate::core::audit::{clean, MAX_MESSAGE, MAX_TEXT};
use crate::core::kind::{FitError, Handle, Kind, Learned, OpenEnv, ShareTo};
use crate::core::pledges::Pledges;
use crate::core::view::HasView;
use crate::core::{Core, HostResult, View};

/// The one list of capability kinds. For each: the case that names it in
/// WIT (`wants`, `grants.handle`, `grants.shared`), its table in
/// `capbroker.toml`, and the type that implements its life cycle; then the
/// handles that are shared but never granted. `with_kinds!(m)` hands the
/// list to the macro `m`: every place that names each kind (the enums
/// here, the manifest's tables in the policy) is made from it.
macro_rules! with_kinds {
    ($then:ident) => {
        $then! {
            granted {
                Dir(dir) => crate::fs::Dirs,
                Listen(listen) => crate::net::Listeners,
                Connect(connect) => crate::net::Connectors,
                Udp(udp) => crate::net::UdpRights,
                Spawner(spawn) => crate::spawn::Spawners,
            }
            shared {
                TcpStream => crate::net::TcpStreamHandle,
            }
        }
    };
}

pub(crate) use with_kinds;

/// Makes, from the list of kinds, the enums that hold a grant or a handle
/// of any kind, and the dispatch from them to each kind's own code.
macro_rules! registry {
    (
        granted { $($case:ident($table:ident) => $kind:ty,)* }
        shared { $($scase:ident => $handle:ty,)* }
    ) => {
        /// One capability the operator grants, by kind.
        #[derive(Clone, Debug)]
        pub enum Grant {
            $($case(<$kind as Kind>::Spec),)*
        }

        /// A host handle of any kind, before it is put into a store's table.
        pub enum HandleValue {
            $($case(<$kind as Kind>::Handle),)*
            $($scase($handle),)*
        }

        impl Grant {
            /// The kind's name, as in the flag that grants it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Grant::$case(_) => <$kind as Kind>::NAME,)*
                }
            }

            /// Checks that the grant's host resource can be opened, before
            /// anything is loaded, so that a bad path is reported first and
            /// alone.
            pub fn check(&self) -> wasmtime::Result<()> {
                match self {
                    $(Grant::$case(s) => <$kind as Kind>::check(s),)*
                }
            }

            fn fit(&self, name: &str, wants: &Wants) -> Result<Grant, FitError> {
                match self {
                    $(Grant::$case(s) => <$kind as Kind>::fit(s, name, wants).map(Grant::$case),)*
                }
            }

            /// The grant narrowed to what learning saw, or `None`.
            pub fn narrow(&self, name: &str, learned: &mut Learned<'_>) -> Option<Grant> {
                match self {
                    $(Grant::$case(s) => <$kind as Kind>::narrow(s, name, learned).map(Grant::$case),)*
                }
            }

            /// Opens the grant; `all` are the run's grants, this one among them.
            fn open(
                &self,
                name: &str,
                all: &[NamedGrant],
                env: &OpenEnv<'_>,
            ) -> wasmtime::Result<(HandleValue, String, String)> {
                match self {
                    $(Grant::$case(spec) => {
                        let peers: Vec<_> = all
                            .iter()
                            .filter_map(|g| match &g.grant {
                                Grant::$case(s) => Some(s),
                                #[allow(unreachable_patterns)]
                                _ => None,
                            })
                            .collect();
                        let o = <$kind as Kind>::open(spec, name, &peers, env)?;
                        Ok((HandleValue::$case(o.handle), o.target, o.detail))
                    })*
                }
            }
        }

        /// The kind a request asks for.
        fn wants_kind(w: &Wants) -> &'static str {
            match w {
                $(Wants::$case { .. } => <$kind as Kind>::NAME,)*
            }
        }

        /// How an operator grants a request, as a flag.
        fn describe_wants(name: &str, w: &Wants) -> String {
            match w {
                $(Wants::$case { .. } => <$kind as Kind>::describe(name, w),)*
            }
        }

        impl HandleValue {
            /// The same handle, ended for good when the instance whose
            /// pledges these are pledges its kind of authority away.
            fn held_by(self, pledges: &Pledges) -> HandleValue {
                match self {
                    $(HandleValue::$case(h) => HandleValue::$case(Handle::held_by(h, pledges)),)*
                    $(HandleValue::$scase(h) => HandleValue::$scase(Handle::held_by(h, pledges)),)*
                }
            }

            /// Puts the handle into `table`, as the guest will see it.
            pub fn push_into(
                self,
                table: &mut ResourceTable,
            ) -> Result<GuestHandle, ResourceTableError> {
                Ok(match self {
                    $(HandleValue::$case(h) => GuestHandle::$case(table.push(h)?),)*
                    $(HandleValue::$scase(h) => GuestHandle::$scase(table.push(h)?),)*
                })
            }

            /// A copy of the shared handle for a child.
            pub fn shared(
                table: &ResourceTable,
                share: &Shared,
                to: &ShareTo<'_>,
            ) -> HostResult<HandleValue> {
                Ok(match share {
                    $(Shared::$case(r) => HandleValue::$case(Handle::share(table.get(r)?, to)?),)*
                    $(Shared::$scase(r) => HandleValue::$scase(Handle::share(table.get(r)?, to)?),)*
                })
            }
        }
    };
}

with_kinds!(registry);

/// An operator's grant under the name the component knows it by.
#[derive(Clone, Debug)]
pub struct NamedGrant {
    pub name: String,
    pub grant: Grant,
}

/// The grants room's per-store state: granted handles the guest has not
/// yet taken with `grants.granted`.
#[derive(Default)]
pub struct GrantsCtx {
    pub pending: Vec<(String, HandleValue)>,
}

/// Adds the `grants` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> View<'_, GrantsCtx>,
) -> wasmtime::Result<()> {
    wit::grants::add_to_linker::<T, HasView<GrantsCtx>>(linker, get)
}

/// Opens every fitted grant and keeps it in `pending` for the guest's
/// `grants.granted`, recording each in the audit trail. `components` are
/// the names the broker can start.
pub fn open(
    fitted: &[NamedGrant],
    core: &Core,
    components: &[String],
    pending: &mut GrantsCtx,
) -> wasmtime::Result<()> {
    let env = OpenEnv {
        learner: core.learner.as_ref(),
        components,
    };
    for g in fitted {
        let (value, target, detail) = g.grant.open(&g.name, fitted, &env)?;
        core.audit.granted(&g.name, &target, &detail);
        pending.pending.push((g.name.clone(), value));
    }
    Ok(())
}

impl wit::grants::Host for View<'_, GrantsCtx> {
    fn granted(&mut self) -> wasmtime::Result<Vec<GuestGrant>> {
        let pending = std::mem::take(&mut self.kind.pending);
        let mut out = Vec::with_capacity(pending.len());
        for (name, value) in pending {
            // The operator's limit on handles is below what was granted:
            // the component cannot start as configured.
            let value = value.held_by(&self.core.pledges);
            let handle = value.push_into(self.table).with_context(|| {
                format!("grant `{name}`: the handle table is full (raise max-handles)")
            })?;
            out.push(GuestGrant { name, handle });
        }
        Ok(out)
    }
}

/// Why the operator's grants do not match the component's requests.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("grant `{0}` is given twice")]
    Twice(String),
    /// `asks` are the requests, as `NAME (KIND)`.
    #[error(
        "grant `{name}`: the component does not ask for a handle by that name \
         (it asks for: {})",
        if asks.is_empty() { "nothing".to_string() } else { asks.join(", ") }
    )]
    Unasked { name: String, asks: Vec<String> },
    #[error("grant `{name}`: the component asks for a {asked} handle, not a {granted}")]
    Kind {
        name: String,
        asked: &'static str,
        granted: &'static str,
    },
    /// The grant lacks what the request needs.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// `missing` are the requests not granted, as the flags that grant them.
    #[error(
        "the component needs grants the operator did not give: {}",
        missing.join("; ")
    )]
    Missing { missing: Vec<String> },
}

/// Matches the operator's grants to the component's requests. Every grant
/// must answer a request of the same kind and carry the rights it asks for;
/// every request that is not optional must be granted. Returns the grants
/// narrowed to the requests, in the order the operator gave them.
pub fn fit(requests: &[Request], grants: &[NamedGrant]) -> Result<Vec<NamedGrant>, Mismatch> {
    let mut seen = HashSet::new();
    let mut fitted = Vec::new();
    for g in grants {
        if !seen.insert(g.name.as_str()) {
            return Err(Mismatch::Twice(g.name.clone()));
        }
        let Some(request) = requests.iter().find(|r| r.name == g.name) else {
            return Err(Mismatch::Unasked {
                name: g.name.clone(),
                asks: requests
                    .iter()
                    .map(|r| format!("{} ({})", clean(&r.name, MAX_TEXT), wants_kind(&r.wants)))
                    .collect(),
            });
        };
        if g.grant.kind() != wants_kind(&request.wants) {
            return Err(Mismatch::Kind {
                name: g.name.clone(),
                asked: wants_kind(&request.wants),
                granted: g.grant.kind(),
            });
        }
        fitted.push(NamedGrant {
            name: g.name.clone(),
            grant: g.grant.fit(&g.name, &request.wants)?,
        });
    }
    let missing: Vec<String> = requests
        .iter()
        .filter(|r| !r.optional && !seen.contains(r.name.as_str()))
        .map(describe_request)
        .collect();
    if !missing.is_empty() {
        return Err(Mismatch::Missing { missing });
    }
    Ok(fitted)
}

/// One request as the operator would grant it, e.g.
/// `--dir data=PATH:read,list (where it keeps its state)`.
///
/// A request's name and text are the component's: they are cleaned (see
/// [`clean`]) before the operator sees them, so that no escape sequence or
/// line of the component's making reaches a terminal.
pub fn describe_request(r: &Request) -> String {
    let flag = describe_wants(&clean(&r.name, MAX_TEXT), &r.wants);
    let optional = if r.optional { ", optional" } else { "" };
    if r.about.is_empty() {
        format!("{flag}{optional}")
    } else {
        format!("{flag} ({}{optional})", clean(&r.about, MAX_MESSAGE))
    }
}
