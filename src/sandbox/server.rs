//! The sandbox's HTTP/1.1 server: a plain accept loop (so a connection can be
//! dropped mid-request to simulate a reset) with transport faults applied
//! before routing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use super::Shared;
use super::api::error_response;

enum Transport {
    Reset,
    RateLimit(Option<String>),
    ServerError(u16),
}

/// Consumes the transport faults due for one API request.
fn take_faults(shared: &Shared) -> (Option<Duration>, Option<Transport>) {
    let mut st = shared.lock();
    st.stats.api_requests += 1;
    let f = &mut st.faults;
    let dec = |n: &mut u32| {
        if *n != u32::MAX {
            *n -= 1;
        }
    };
    let mut delay = None;
    if f.delay > 0 && f.delay_ms > 0 {
        dec(&mut f.delay);
        delay = Some(Duration::from_millis(f.delay_ms));
    }
    let action = if f.reset > 0 {
        dec(&mut f.reset);
        Some(Transport::Reset)
    } else if f.rate_limit > 0 {
        dec(&mut f.rate_limit);
        Some(Transport::RateLimit(f.retry_after.clone()))
    } else if f.server_error > 0 {
        dec(&mut f.server_error);
        Some(Transport::ServerError(if f.server_error_status == 0 {
            503
        } else {
            f.server_error_status
        }))
    } else {
        None
    };
    if action.is_some() {
        st.stats.faults_injected += 1;
    }
    (delay, action)
}

fn is_api_path(path: &str) -> bool {
    path.starts_with("/amc/") || path.starts_with("/v2/")
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                conns.spawn(connection(stream, router.clone(), shared.clone()));
            }
        }
    }
    conns.abort_all();
}

async fn connection(stream: tokio::net::TcpStream, router: Router, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket so a reset can set SO_LINGER=0 (RST)
    // after hyper's handle is dropped.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let dup = std_stream.try_clone().ok();
    let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let kill = Arc::new(Notify::new());
    let svc = {
        let kill = kill.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let shared = shared.clone();
            let kill = kill.clone();
            async move {
                if is_api_path(req.uri().path()) {
                    let (delay, action) = take_faults(&shared);
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    match action {
                        Some(Transport::Reset) => {
                            kill.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Some(Transport::RateLimit(retry_after)) => {
                            let mut resp = error_response(
                                429,
                                "TOO_MANY_REQUESTS",
                                "Too Many Requests (sandbox fault)",
                            );
                            if let Some(v) = retry_after
                                && let Ok(v) = v.parse()
                            {
                                resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
                            }
                            return Ok::<Response, Infallible>(resp);
                        }
                        Some(Transport::ServerError(status)) => {
                            return Ok(error_response(
                                status,
                                "INTERNAL_ERROR",
                                "Internal Server Error (sandbox fault)",
                            ));
                        }
                        None => {}
                    }
                }
                let resp =
                    tower_service::Service::call(&mut router, req.map(axum::body::Body::new))
                        .await
                        .into_response();
                Ok(resp)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {
            if let Some(dup) = dup
                && let Ok(s) = tokio::net::TcpStream::from_std(dup)
            {
                let _ = s.set_zero_linger();
                drop(s);
            }
        }
    }
}
