//! What the web-server example's `/` route answers, as a `wasi:http` proxy
//! component: the load benchmark runs it under `wasmtime serve`, which
//! instantiates it afresh for every request, to compare with capbroker.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let body_text = b"hello, bench";
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let _ = headers.set(
            "content-length",
            &[body_text.len().to_string().into_bytes()],
        );
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a fresh response has a body");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("the body has a stream");
        out.write_all(body_text).expect("write the body");
        out.flush().expect("flush the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish the body");
    }
}

wasip2::http::proxy::export!(Hello);
