//! Outgoing `wasi:http` requests through capbroker's own connector.
//!
//! wasi-http's default connector connects to whatever a guest's URL names.
//! This one connects only where a connect grant reaches: the URL's host
//! must be an address inside a granted range, or a host name a grant
//! names, and then only the addresses that name was looked up to at start
//! are tried ([`Reach::targets`], the same rule as `net`'s `connect`). It
//! makes no lookup of its own, and none for a name no grant names. HTTPS is
//! checked the same way, then verified against the web's root
//! certificates under the URL's own host name.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::host::connect;
use super::Reach;
use crate::core::audit::Audit;
use crate::core::pledges::{Authority, Pledges};
use crate::core::{Error, Rights};

/// How long a connection, and the first byte of a response, may take when
/// the guest sets no timeout of its own (wasi-http's default is 600 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a guest's outgoing requests, only to what `connect` reaches.
#[derive(Clone, Default)]
pub struct Outgoing {
    /// The connect grants of the instance (of the route, under `serve`).
    pub connect: Arc<[Reach]>,
    pub pledges: Pledges,
    pub audit: Option<Audit>,
    /// The most bytes one write to a body buffers (see `HttpState::bound`);
    /// zero: wasi-http's default.
    pub chunk: usize,
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for Outgoing {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        match self.chunk {
            0 => wasmtime_wasi_http::p2::DEFAULT_OUTGOING_BODY_CHUNK_SIZE,
            n => n,
        }
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let this = self.clone();
        Box::new(async move {
            let (response, io) = this.send(request, options).await?;
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(io);
            Ok((response.map(BodyExt::boxed_unsync), io))
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

impl Outgoing {
    /// Where a request is refused: recorded, and `HttpRequestDenied` for
    /// the guest.
    fn refuse(&self, authority: &str, why: Error) -> HttpError {
        if let Some(audit) = &self.audit {
            audit.refused(
                "http-request",
                "wasi:http",
                authority,
                Rights::empty(),
                &why,
            );
        }
        HttpError::HttpRequestDenied
    }

    async fn send(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<
        (
            http::Response<ResponseBody>,
            impl Future<Output = Result<(), HttpError>> + Send,
        ),
        HttpError,
    > {
        let uri = request.uri();
        let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(HttpError::HttpProtocolError),
        };
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // `host()` keeps an IPv6 address in brackets, as `targets` reads it.
        let host = authority.host().to_string();
        let address = format!("{host}:{port}");
        if self.pledges.renounced().contains(Authority::NETWORK) {
            return Err(self.refuse(
                &address,
                Error::Refused("the network was pledged away".into()),
            ));
        }
        let timeout = |t: Option<Duration>| t.unwrap_or(DEFAULT_TIMEOUT);
        let connect_timeout = timeout(options.and_then(|o| o.connect_timeout));
        let first_byte_timeout = timeout(options.and_then(|o| o.first_byte_timeout));
        let between_bytes = timeout(options.and_then(|o| o.between_bytes_timeout));

        // The first grant whose reach takes the address makes the
        // connection; a grant that does not is no error until none does.
        let mut refused = None;
        let mut stream = None;
        for reach in self.connect.iter() {
            match connect(reach, &address, connect_timeout).await {
                Ok(s) => {
                    stream = Some(s.stream);
                    break;
                }
                Err(e @ (Error::Refused(_) | Error::Revoked | Error::Denied(_))) => {
                    refused = Some(e)
                }
                Err(e) => {
                    tracing::debug!("outgoing request to {address}: {e}");
                    return Err(HttpError::ConnectionRefused);
                }
            }
        }
        let Some(stream) = stream else {
            let why = refused.unwrap_or_else(|| {
                Error::Refused(format!("{address}: no connect grant reaches it"))
            });
            return Err(self.refuse(&address, why));
        };
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = if tls {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(bare.to_string())
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?,
            };
            let tls = tokio::time::timeout(connect_timeout, connector.connect(name, stream))
                .await
                .map_err(|_| HttpError::ConnectionTimeout)?
                .map_err(HttpError::Tls)?;
            Box::new(tls)
        } else {
            Box::new(stream)
        };
        let (mut sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
        // The request line carries only the path: the scheme and authority
        // are for a proxy.
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;

        let mut conn = Some(conn);
        let response = {
            let mut send = pin!(tokio::time::timeout(
                first_byte_timeout,
                sender.send_request(request)
            ));
            // Drive the connection while the response is awaited.
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = send.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(|_| HttpError::ConnectionReadTimeout));
                }
                if let Some(c) = conn.as_mut() {
                    if let Poll::Ready(r) = Pin::new(c).poll(cx) {
                        conn = None;
                        if let Err(e) = r {
                            return Poll::Ready(Ok(Err(e)));
                        }
                    }
                }
                Poll::Pending
            })
            .await?
            .map_err(HttpError::from)?
        };
        let response = response.map(|incoming| ResponseBody {
            incoming,
            idle: Box::pin(tokio::time::sleep(between_bytes)),
            between_bytes,
        });
        let io = async move {
            match conn {
                Some(c) => c.await.map_err(HttpError::from),
                None => Ok(()),
            }
        };
        Ok((response, io))
    }
}

/// A response's body, ended when nothing arrives for too long.
pub struct ResponseBody {
    incoming: hyper::body::Incoming,
    idle: Pin<Box<tokio::time::Sleep>>,
    between_bytes: Duration,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
