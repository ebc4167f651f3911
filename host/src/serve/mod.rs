//! `capbroker serve`: an unmodified `wasi:http/proxy` component, with a
//! fresh instance for every request, as `wasmtime serve` runs it, and what
//! each request gets decided by the route it matches (see
//! [`crate::policy::route`]): its directories (WASI preopens with
//! capbroker's rights), environment, connect grants (sockets and outgoing
//! HTTP, through capbroker's connector) and limits. A request that matches
//! no route gets 404 without an instance; one whose path has a `.` or `..`
//! segment, 400.
//!
//! A request's budget (memory, fuel, wall-clock time, handles) covers its
//! instantiation and its handler, body included. Spent before the
//! response head was sent, the request gets 503; after, the connection is
//! cut, so that a client never takes a cut-off body for a whole one. The
//! server goes on whatever one request does.
//!
//! - [`request`]: one request, from its route to its response;
//! - [`Server`]: the component, the routes, and the accept loop.

pub mod launch;
mod request;

pub use launch::Serve;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use hyper::server::conn::http1;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::core::audit::{Audit, AuditLog};
use crate::core::learn::Learner;
use crate::core::limits::Limits;
use crate::policy::route::Route;
use crate::run::app::Runtime;
use crate::run::{Components, State};
use crate::wasi::WasiGrants;

/// The most connections served at once, as `wasmtime serve`'s default.
pub const MAX_CONNECTIONS: usize = 1000;

/// The most requests whose instances are alive at once: the instance pool
/// `serve` makes. One more gets 503 at once, without waiting. Fewer when
/// the open-file limit cannot hold that many requests' handles: see
/// [`max_requests`].
pub const MAX_REQUESTS: u32 = crate::run::engine::DEFAULT_INSTANCES;

/// A request's handle limit when neither its route nor `[limits]` sets one:
/// a handler's request, headers, bodies, streams and files take a few dozen.
pub const DEFAULT_MAX_HANDLES: usize = 128;

/// Open files kept for the server itself: its listener, connections, the
/// audit log, the component.
const FILES_KEPT: u64 = 1024;

/// How many requests may have an instance at once: at most
/// [`MAX_REQUESTS`], and no more than the process's open-file limit holds
/// when each request holds its most host files (`files`: its route's
/// directories, and up to twice its handle limit): so that requests
/// together cannot take the files the server needs to accept the next
/// connection.
/// `None` when not even one request fits.
pub fn max_requests(files: usize) -> Option<u32> {
    let per_request = files.max(1) as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call on a struct that outlives it.
    let open_files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    let n = open_files.saturating_sub(files_kept(open_files)) / per_request;
    (n > 0).then(|| n.min(u64::from(MAX_REQUESTS)) as u32)
}

/// How long a client may take to send a request's head, idle keep-alive
/// time before it included: a connection that sends nothing, or trickles
/// a head, is closed, and its place among [`MAX_CONNECTIONS`] freed.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A route as the server uses it: its grants ready to build each
/// request's WASI context from, and its limits.
pub struct ServedRoute {
    pub route: Route,
    /// How the audit trail names it.
    pub name: String,
    pub grants: WasiGrants,
    pub limits: Limits,
    /// What requests on this route use, for `serve --learn`.
    pub learner: Option<Arc<Learner>>,
}

/// A `wasi:http/proxy` component and its routes.
pub struct Server {
    pre: ProxyPre<State>,
    name: Arc<str>,
    routes: Vec<ServedRoute>,
    /// The server's own trail: each request's is a child of it, sharing its
    /// rate limits, so that a flood of requests writes no more denials
    /// than one process may.
    audit: Audit,
    components: Arc<Components>,
    /// What each request's instance gets as its arguments: its name.
    argv: [String; 1],
    /// One for each request whose instance is alive.
    requests: Arc<Semaphore>,
}

impl Server {
    /// Compiles and links the proxy component at `path` with `routes`.
    pub fn new(
        rt: &Runtime,
        path: &Path,
        routes: Vec<ServedRoute>,
        audit_log: Option<Arc<AuditLog>>,
        max_requests: u32,
    ) -> wasmtime::Result<Server> {
        let name = crate::run::app::component_name(&path.display().to_string());
        let pre = rt.load_proxy(path)?;
        let audit = Audit::new(name.as_str(), crate::run::ctx::next_pid()).with_log(audit_log);
        for r in &routes {
            r.grants.audit(&audit.child(r.name.as_str().into(), 0));
        }
        Ok(Server {
            pre,
            name: name.as_str().into(),
            routes,
            audit,
            components: Arc::new(Components::new()),
            argv: [name],
            requests: Arc::new(Semaphore::new(max_requests as usize)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn routes(&self) -> &[ServedRoute] {
        &self.routes
    }

    /// Serves HTTP/1.1 on `listener` until the process ends. Each
    /// connection is a task; each request a fresh instance.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> wasmtime::Result<()> {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = permits.clone().acquire_owned().await?;
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of fds, or a connection reset before it was taken:
                // the server goes on.
                Err(e) => {
                    tracing::warn!("capbroker serve: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let served = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("capbroker serve: connection: {e}");
                }
                drop(permit);
            });
        }
    }
}

/// The open files the server keeps for itself out of `limit`: up to
/// [`FILES_KEPT`], and a quarter of a small limit (a container's 1,024).
pub fn files_kept(limit: u64) -> u64 {
    FILES_KEPT.min(limit / 4)
}
