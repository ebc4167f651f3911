//! One request: its route, a fresh instance with the route's grants and
//! budget, and its response, or the status that says why there is none.

use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::{ServedRoute, Server};
use crate::core::pledges::Pledges;
use crate::policy::learned::REQUESTS;
use crate::policy::route::unsafe_segment;
use crate::run::runner::{new_store_with_wasi, record_exit, supervise, Deadline, Ended};
use crate::run::BrokerCtx;

/// How a request's instance ended, as far as its response is concerned.
enum Outcome {
    /// Its handler returned.
    Returned,
    /// A limit stopped it: memory, fuel or time.
    Limit(&'static str),
    /// It trapped, or could not be instantiated.
    Failed(String),
    /// The instance pool had no room for it.
    Busy,
}

impl Server {
    /// Answers one request. Never fails: whatever the guest does, the
    /// client gets a status, or a cut connection once a head was sent.
    pub(super) async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> Response<WasiBody> {
        let path = req.uri().path();
        if let Some(seg) = unsafe_segment(path) {
            let seg = seg.to_string();
            return plain(
                StatusCode::BAD_REQUEST,
                format!("the path has a `{seg}` segment: not served\n"),
            );
        }
        let method = req.method().as_str();
        let Some(index) = self
            .routes
            .iter()
            .position(|r| r.route.matches(method, path))
        else {
            return plain(
                StatusCode::NOT_FOUND,
                "no route matches this request\n".into(),
            );
        };
        // Refused at once when every instance is taken, rather than left
        // to fail in the pool.
        let Ok(permit) = self.requests.clone().try_acquire_owned() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "every instance is busy: try again\n".into(),
            );
        };
        match self.run(index, req, permit).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!("capbroker serve: {e:#}");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the handler failed\n".into(),
                )
            }
        }
    }

    /// Runs the route's handler in a fresh instance on its own task, and
    /// answers with what it sets, or with a status saying why it set none.
    async fn run(
        self: Arc<Self>,
        index: usize,
        req: hyper::Request<Incoming>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> wasmtime::Result<Response<WasiBody>> {
        let served: &ServedRoute = &self.routes[index];
        let head = req.method() == http::Method::HEAD;
        let pid = crate::run::ctx::next_pid();
        let audit = self.audit.child(self.name.clone(), pid);
        if audit.logged() {
            let target = req.uri().to_string();
            audit.request(req.method().as_str(), &target, &served.name);
        }
        if let Some(learner) = &served.learner {
            learner.spawned(REQUESTS, &self.name);
        }
        let pledges = Pledges::default();
        let broker = BrokerCtx::with_trail(audit, self.components.clone())
            .with_learner(served.learner.clone());
        let (wasi, state) = served.grants.build(&self.argv, &pledges, broker.audit())?;
        let broker = broker.with_wasi(state, pledges);
        let limits = served.limits.clone();
        let mut store = new_store_with_wasi(self.pre.engine(), broker, wasi, &limits);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        // Set before the store is dropped, so that a body cut short by a
        // limit is never taken for a whole one.
        let aborted = Arc::new(AtomicBool::new(false));
        let server = self.clone();
        let flag = aborted.clone();
        // Dropped with this future (the client went away before the
        // response) or with the response's body before its end (it went
        // away during it): either stops the instance at once, so that no
        // instance outlives its client.
        let mut client = ClientGone::new();
        let gone = client.notify.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let deadline = Deadline::after(limits.timeout);
            let stopped = {
                let pre = &server.pre;
                let store = &mut store;
                let call = async move {
                    // Instantiating runs guest code too: under the same budget.
                    let proxy = pre.instantiate_async(&mut *store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut *store, request, out)
                        .await
                };
                supervise(pin!(call), deadline, gone.notified()).await
            };
            let ended = Ended::of(stopped, &store);
            let outcome = match &ended {
                Ended::Returned(()) => Outcome::Returned,
                Ended::Exit(0) => Outcome::Returned,
                Ended::Exit(code) => Outcome::Failed(format!("the handler exited with {code}")),
                Ended::OutOfMemory(_) | Ended::OutOfFuel(_) | Ended::TimedOut(_) => {
                    Outcome::Limit(ended.limit().unwrap_or("time"))
                }
                Ended::Killed => Outcome::Failed("the client went away".into()),
                // Out of pool slots for one of its parts (a component of
                // many core modules): the server is busy, not the handler
                // wrong.
                Ended::Trapped(e)
                    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some() =>
                {
                    Outcome::Busy
                }
                Ended::Trapped(e) => Outcome::Failed(format!("{e:#}")),
            };
            let record = record_exit(&store, ended.status(|_| "finished"), ended.limit());
            if let Some(learner) = &server.routes[index].learner {
                learner.exited(REQUESTS, &record);
            }
            if !matches!(outcome, Outcome::Returned) {
                flag.store(true, Ordering::Release);
            }
            drop(store);
            outcome
        });
        match receiver.await {
            Ok(Ok(response)) => {
                // A response without a body on the wire (to HEAD, or 1xx,
                // 204, 304): hyper drops the body unread, which is no sign
                // of the client going; the instance may finish.
                let status = response.status();
                if head || status.is_informational() || status == 204 || status == 304 {
                    client.done();
                }
                Ok(response.map(|body| cut_on_abort(body, aborted, client)))
            }
            Ok(Err(code)) => {
                // The handler answered with an error of its own; it is
                // stopped if it goes on (`client` is dropped).
                Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the handler failed: {code:?}\n"),
                ))
            }
            Err(_) => {
                // No response was set: how the instance ended says why.
                let outcome = task
                    .await
                    .unwrap_or_else(|e| Outcome::Failed(e.to_string()));
                Ok(match outcome {
                    Outcome::Limit(limit) => plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the request ran out of its {} budget\n", budget(limit)),
                    ),
                    Outcome::Failed(why) => {
                        tracing::info!("capbroker serve: {}: {why}", self.name);
                        plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the handler failed\n".into(),
                        )
                    }
                    Outcome::Busy => plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "every instance is busy: try again\n".into(),
                    ),
                    Outcome::Returned => plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the handler returned without a response\n".into(),
                    ),
                })
            }
        }
    }
}

/// The word for a limit, as a client reads it.
fn budget(limit: &str) -> &'static str {
    match limit {
        "memory" => "memory",
        "cpu" => "CPU",
        _ => "time",
    }
}

/// A short plain-text response from the server itself.
fn plain(status: StatusCode, text: String) -> Response<WasiBody> {
    let body = http_body_util::Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The guest's body, which ends in an error rather than cleanly if the
/// instance was stopped by a limit or a trap: hyper then cuts the
/// connection instead of ending the response.
fn cut_on_abort(body: HyperOutgoingBody, aborted: Arc<AtomicBool>, client: ClientGone) -> WasiBody {
    CutOnAbort {
        body,
        aborted,
        client,
    }
    .boxed_unsync()
}

struct CutOnAbort {
    body: HyperOutgoingBody,
    aborted: Arc<AtomicBool>,
    client: ClientGone,
}

/// Stops a request's instance when dropped, unless the request was done:
/// see [`Server::run`].
struct ClientGone {
    notify: Arc<tokio::sync::Notify>,
    done: bool,
}

impl ClientGone {
    fn new() -> ClientGone {
        ClientGone {
            notify: Arc::new(tokio::sync::Notify::new()),
            done: false,
        }
    }

    /// The client has all it will get: the instance may finish on its own.
    fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        if !self.done {
            // A stored permit: the instance sees it at its next wait.
            self.notify.notify_one();
        }
    }
}

impl http_body::Body for CutOnAbort {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(None) if self.aborted.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
            }
            Poll::Ready(None) => {
                self.client.done();
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not known until the instance's end is: see `poll_frame`.
        false
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
