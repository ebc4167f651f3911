//! `capbroker serve` from a [`Config`]: the routes made ready, the checks a
//! run gets before any guest code runs, and the server started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::bail;
use wasmtime::error::Context;

use super::{ServedRoute, Server};
use crate::core::learn::Learner;
use crate::grants::{Grant, NamedGrant};
use crate::policy::route::{Pattern, Route, RouteLimits};
use crate::policy::Config;
use crate::run::app::Runtime;
use crate::run::launch::{before_any_guest, create_audit_log, wasi_grants};

/// Where `capbroker serve` listens unless told: as `wasmtime serve`.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";

/// A request's wall-clock budget when neither its route nor `[limits]`
/// sets one: no request runs for ever.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs a launch (the containerd shim's), serving it if its component is a
/// `wasi:http/proxy` one: with its manifest's routes, on its `[serve]
/// addr`, or `CAPBROKER_ADDR` from the container's environment, or
/// [`DEFAULT_ADDR`]. The container's environment is the one route's when
/// the manifest has no routes (which list their own variables).
pub async fn run_or_serve(launch: crate::run::launch::Launch) -> wasmtime::Result<u8> {
    use crate::run::launch::Ran;
    let launch = match launch.start().await? {
        Ran::Exit(code) => return Ok(code),
        Ran::Proxy(l) => *l,
    };
    let mut config = launch.config;
    if config.addr.is_none() {
        if let Some((_, a)) = config.env.iter().find(|(k, _)| k == "CAPBROKER_ADDR") {
            let addr = a
                .parse::<SocketAddr>()
                .with_context(|| format!("CAPBROKER_ADDR: `{a}` is not HOST:PORT"))?;
            config.addr = Some(addr);
        }
    }
    if launch.env_from_container && !config.routes.is_empty() {
        config.env.clear();
    }
    Serve {
        config,
        audit: launch.audit,
        learn: launch.learn,
        quiet: launch.quiet,
    }
    .run()
    .await?;
    Ok(0)
}

/// One `capbroker serve`: what is granted, and what is recorded.
pub struct Serve {
    pub config: Config,
    /// Write the audit log, as JSON Lines, to this file.
    pub audit: Option<PathBuf>,
    /// Learning mode: write the route-scoped manifest of what the requests
    /// used to this file, when the server stops.
    pub learn: Option<PathBuf>,
    pub quiet: bool,
}

impl Serve {
    /// The routes a configuration serves: its `[[route]]` tables, or, with
    /// none, one route for every request with the configuration's own
    /// grants (`capbroker serve --dir … app.wasm`, as `wasmtime serve`).
    pub fn routes(config: &Config) -> wasmtime::Result<Vec<Route>> {
        for g in &config.grants {
            if matches!(g.grant, Grant::Spawner(_) | Grant::Listen(_)) {
                bail!(
                    "grant `{}`: a request handler gets directories and connect grants only \
                     (`{}` is for capbroker apps)",
                    g.name,
                    g.grant.kind()
                );
            }
        }
        if !config.components.is_empty() {
            bail!("--component and [components] are for capbroker apps, not `serve`");
        }
        if config.stdin {
            bail!("a request handler does not read the server's standard input");
        }
        if config.routes.is_empty() {
            return Ok(vec![Route {
                pattern: Pattern::parse("/...").expect("a valid pattern"),
                methods: None,
                grants: config.grants.clone(),
                env: config.env.clone(),
                limits: RouteLimits::default(),
            }]);
        }
        if let Some(g) = config.grants.first() {
            bail!(
                "grant `{}`: with [[route]] tables, each route lists its own grants (put it in \
                 the routes that need it, e.g. [route.{}.{}])",
                g.name,
                g.grant.kind(),
                g.name
            );
        }
        if !config.env.is_empty() {
            bail!("with [[route]] tables, each route lists its own environment ([route.env])");
        }
        Ok(config.routes.clone())
    }

    /// The configuration with every route's grants as its own, each named
    /// after its route, for the checks that every grant of a run gets.
    fn every_grant(config: &Config, routes: &[Route]) -> Config {
        let grants: Vec<NamedGrant> = routes
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.grants.iter().map(move |g| NamedGrant {
                    name: format!("route {} {}", i + 1, g.name),
                    grant: g.grant.clone(),
                })
            })
            .collect();
        Config {
            grants,
            manifest: config.manifest.clone(),
            component: config.component.clone(),
            no_cache: config.no_cache,
            ..Config::default()
        }
    }

    /// Checks everything, then serves until the process ends.
    pub async fn run(self) -> wasmtime::Result<()> {
        let Serve {
            config,
            audit,
            learn,
            quiet,
        } = self;
        let routes = Serve::routes(&config)?;
        let every = Serve::every_grant(&config, &routes);
        // As `run`: no grant may reach the manifest, the audit log or
        // learning's output, nor be redirected through another's link.
        before_any_guest(&every, audit.as_deref(), learn.as_deref(), quiet)?;
        let Some(component) = config.component.clone() else {
            bail!(
                "no component to serve: name one, or give a manifest (-m) with `component = \"...\"`"
            );
        };
        let mut base = config.limits();
        base.timeout = base.timeout.or(Some(DEFAULT_TIMEOUT));
        if config.max_handles.is_none() {
            base.max_handles = super::DEFAULT_MAX_HANDLES;
        }
        // Each request opens its route's directories (and their scopes'
        // entries) before the guest runs, and then holds up to twice its
        // handle limit in host files.
        let mut most_files = 2 * base.max_handles;
        for (i, r) in routes.iter().enumerate() {
            let handles = r.limits.over(&base).max_handles;
            let dirs: usize = r
                .grants
                .iter()
                .filter_map(|g| match &g.grant {
                    Grant::Dir(d) => Some(1 + d.paths.as_ref().map_or(0, |p| p.len())),
                    _ => None,
                })
                .sum();
            // Each preopen is a handle of the guest's from the start.
            if dirs >= handles {
                bail!(
                    "route {} `{}` grants {dirs} directories and scope entries, but its \
                     max-handles is {handles}: each is a handle before the guest runs",
                    i + 1,
                    r.name()
                );
            }
            most_files = most_files.max(2 * handles + dirs);
        }
        let Some(max_requests) = super::max_requests(most_files) else {
            bail!(
                "not even one request fits this process's open-file limit: each may hold up \
                 to {most_files} host files (its directories, and twice its max-handles), \
                 beside those the server keeps for itself; raise the limit (ulimit -n) or \
                 lower max-handles"
            );
        };
        if max_requests < super::MAX_REQUESTS && !quiet {
            eprintln!(
                "capbroker: at most {max_requests} requests at once: each may hold up to \
                 {most_files} host files (its directories, and twice its max-handles), within \
                 this process's open-file limit"
            );
        }
        // One pool slot for each request that may be alive at once, each
        // as large as the largest memory budget of a route.
        let pool = crate::run::engine::Pool {
            instances: max_requests,
            max_memory: routes
                .iter()
                .map(|r| r.limits.over(&base).max_memory as u64)
                .max()
                .unwrap_or(base.max_memory as u64),
        };
        pool.plan().context("the instance pool")?;
        let mut rt = Runtime::for_requests(&pool)?;
        if !config.no_cache {
            rt.use_default_cache();
        }
        let log = match &audit {
            Some(path) => {
                let log = create_audit_log(path)?;
                rt.set_audit_log(log.clone());
                Some(log)
            }
            None => None,
        };
        let mut served = Vec::with_capacity(routes.len());
        for (i, route) in routes.into_iter().enumerate() {
            let learner = learn.as_ref().map(|_| Learner::new());
            let mut grants = wasi_grants(route.grants.clone(), route.env.clone(), false)
                .with_context(|| format!("route {} `{}`", i + 1, route.name()))?;
            grants.learn_with(learner.as_ref());
            served.push(ServedRoute {
                name: route.name(),
                limits: route.limits.over(&base),
                route,
                grants,
                learner,
            });
        }
        let server = Arc::new(Server::new(&rt, &component, served, log, max_requests)?);
        let addr = config
            .addr
            .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("a valid address"));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        if !quiet {
            eprintln!("capbroker: serving {} on http://{local}/", server.name());
            for r in server.routes() {
                eprintln!("capbroker:   {}  {}", r.route.name(), r.grants.summary());
            }
        }
        match learn {
            None => server.serve(listener).await,
            Some(path) => {
                // Learning ends with the server: on Ctrl-C (or SIGTERM), the
                // manifest of what the requests used is written.
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = server.clone().serve(listener) => return r,
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                let learners: Vec<_> = server.routes().iter().map(|r| r.learner.clone()).collect();
                let config = Config {
                    routes: server.routes().iter().map(|r| r.route.clone()).collect(),
                    ..config.absolute()
                };
                let text =
                    crate::policy::learned::routes(&config, &learners, &base).context("--learn")?;
                crate::run::launch::write_private(&path, &text)?;
                eprintln!("capbroker: wrote {}", path.display());
                Ok(())
            }
        }
    }
}
