//! An agent's egress proxy (`hive-c0re egress-proxy`), run on the host as its own sandboxed
//! transient unit `hive-egress-<name>.service`, started by `hive-egress-<name>.socket` at
//! the agent's first connection (plan/egress.rs). It serves the unix socket the agent's
//! container sees (its only way out of a namespace with only `lo`),
//! speaks HTTP through hyper (CONNECT for TLS, absolute-form forwarding for plain http),
//! resolves names itself, and lets through only what the agent's allowlist names.

pub mod allowlist;
mod count;
mod events;
pub mod splice;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::spec::egress::{is_special, EgressEntry};
use crate::spec::AgentName;
use allowlist::Allowlist;
use count::{Counted, Counters};
use events::{Events, Outcome};

/// Connections served at once; past it a client gets a 503 at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections answered 503 at once; past both a connection is closed unanswered.
const MAX_OVERFLOW: usize = 64;
/// Bounds on what the agent or a destination may make the proxy wait for.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many entries a refusal names before `…`.
const SHOWN_ENTRIES: usize = 5;
/// Buffer each way of a tunnel hyper did not hand back as the socket it read.
const COPY_BUF: usize = 64 << 10;

type Body = BoxBody<Bytes, hyper::Error>;

struct State {
    agent: AgentName,
    allow: Allowlist,
    events: Events,
}

/// Serves on `listener` (the socket systemd listens on for the agent) until killed.
/// `dir` holds the allowlist.
pub async fn run(
    agent: AgentName,
    dir: PathBuf,
    listener: std::os::unix::net::UnixListener,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .context("the socket from systemd")?;
    let listener = UnixListener::from_std(listener).context("the socket from systemd")?;
    let state = Arc::new(State {
        allow: Allowlist::new(&dir),
        events: Events::new(agent.clone()),
        agent,
    });
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let flusher = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(events::WINDOW);
        loop {
            tick.tick().await;
            flusher.events.flush();
        }
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let overflow = Arc::new(Semaphore::new(MAX_OVERFLOW));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // EMFILE and the like: wait a little rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (permit, full) = match slots.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => continue, // dropped: closed unanswered
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let permit = Arc::new(permit);
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let permit = permit.clone();
                async move {
                    if full {
                        return Ok::<_, Infallible>(text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &format!(
                                "hyperhive egress proxy of {}: too many connections at once (at most {MAX_CONNECTIONS})",
                                state.agent
                            ),
                        ));
                    }
                    Ok(handle(req, state, permit).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

fn text(status: StatusCode, line: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{line}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Why a destination was refused, and the status the agent sees.
struct Refusal {
    status: StatusCode,
    reason: String,
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) -> Response<Body> {
    let t0 = Instant::now();
    let connect = req.method() == Method::CONNECT;
    let target = if connect {
        req.uri()
            .authority()
            .and_then(|a| Some((a.host().to_owned(), a.port_u16()?)))
    } else if req.uri().scheme_str() == Some("http") {
        req.uri()
            .host()
            .map(|h| (h.to_owned(), req.uri().port_u16().unwrap_or(80)))
    } else {
        None
    };
    let Some((host, port)) = target else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "hyperhive egress proxy of {}: only CONNECT host:port or an absolute http:// URL",
                state.agent
            ),
        );
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let entries = state.allow.current();
    let tcp = match decide(&state.agent, &entries, &host, port).await {
        Ok(addrs) => connect_any(&addrs).await.map_err(|e| Refusal {
            status: StatusCode::BAD_GATEWAY,
            reason: format!("no connection to {host}:{port}: {e}"),
        }),
        Err(r) => Err(r),
    };
    let tcp = match tcp {
        Ok(t) => t,
        Err(r) => {
            state.events.record(Outcome {
                host: &host,
                port,
                result: Err(&r.reason),
                duration: t0.elapsed(),
            });
            return text(r.status, &format!("hyperhive egress: {}", r.reason));
        }
    };
    let counters = Arc::new(Counters::default());
    if connect {
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(up) = hyper::upgrade::on(req).await {
                let _ = tunnel(up, tcp, &counters).await;
            }
            state.events.record(Outcome {
                host: &host,
                port,
                result: Ok(counters.get()),
                duration: t0.elapsed(),
            });
        });
        return Response::new(empty());
    }
    let upstream = Counted::new(tcp, counters.clone());
    forward(req, upstream, state, host, port, counters, t0, permit).await
}

/// Plain http: the request goes on in origin form over a fresh connection.
#[allow(clippy::too_many_arguments)]
async fn forward(
    req: Request<Incoming>,
    upstream: Counted,
    state: Arc<State>,
    host: String,
    port: u16,
    counters: Arc<Counters>,
    t0: Instant,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) -> Response<Body> {
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(x) => x,
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("hyperhive egress: {host}:{port}: {e}"),
                )
            }
        };
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "hyperhive egress: bad path"),
    };
    for h in ["proxy-connection", "proxy-authorization"] {
        parts.headers.remove(h);
    }
    let logged = state.clone();
    let (h2, c2) = (host.clone(), counters.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let _ = conn.await;
        logged.events.record(Outcome {
            host: &h2,
            port,
            result: Ok(c2.get()),
            duration: t0.elapsed(),
        });
    });
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("hyperhive egress: {host}:{port}: {e}"),
        ),
    }
}

/// The addresses to connect to, if the allowlist lets `host:port` through.
async fn decide(
    agent: &AgentName,
    entries: &[EgressEntry],
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Refusal> {
    let not_listed = || {
        Refusal {
        status: StatusCode::FORBIDDEN,
        reason: format!(
            "{host}:{port} is not on agent {agent}'s egress allowlist ({}); ask for it with request_approval",
            shown(entries)
        ),
    }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        // An address literal passes only where an entry names it (an admin's).
        return if entries.iter().any(|e| e.allows_addr(ip, port)) {
            Ok(vec![SocketAddr::new(ip, port)])
        } else {
            Err(not_listed())
        };
    }
    if !entries.iter().any(|e| e.allows_name(host, port)) {
        return Err(not_listed());
    }
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(Refusal {
                    status: StatusCode::BAD_GATEWAY,
                    reason: format!("{host} does not resolve: {e}"),
                })
            }
            Err(_) => {
                return Err(Refusal {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    reason: format!("{host}: no answer from the resolver in {RESOLVE_TIMEOUT:?}"),
                })
            }
        };
    // DNS rebinding: a listed name that leads to the host's loopback, link-local (cloud
    // metadata), unspecified or multicast addresses, which no entry names itself.
    if let Some(bad) = addrs
        .iter()
        .find(|a| is_special(a.ip()) && !entries.iter().any(|e| e.allows_addr(a.ip(), port)))
    {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: format!(
                "{host} resolves to {}, a loopback, link-local, unspecified or multicast address that no entry of agent {agent}'s allowlist names",
                bad.ip()
            ),
        });
    }
    if addrs.is_empty() {
        return Err(Refusal {
            status: StatusCode::BAD_GATEWAY,
            reason: format!("{host} has no address"),
        });
    }
    Ok(addrs)
}

fn shown(entries: &[EgressEntry]) -> String {
    if entries.is_empty() {
        return "it is empty".into();
    }
    let mut s: Vec<String> = entries
        .iter()
        .take(SHOWN_ENTRIES)
        .map(ToString::to_string)
        .collect();
    if entries.len() > SHOWN_ENTRIES {
        s.push(format!("… {} in all", entries.len()));
    }
    s.join(", ")
}

/// A CONNECT tunnel: the agent's socket taken back from hyper and spliced to the
/// destination's ([`splice`]), after any bytes the agent sent behind its request.
async fn tunnel(
    up: hyper::upgrade::Upgraded,
    tcp: TcpStream,
    counters: &Arc<Counters>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    match up.downcast::<TokioIo<UnixStream>>() {
        Ok(parts) => {
            let mut tcp = tcp;
            if !parts.read_buf.is_empty() {
                tcp.write_all(&parts.read_buf).await?;
                counters.out.fetch_add(
                    parts.read_buf.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            let agent = splice::Socket::Unix(parts.io.into_inner());
            let dest = splice::Socket::Tcp(tcp);
            splice::tunnel(&agent, &dest, &counters.out, &counters.inn).await
        }
        // Not the socket this proxy serves on (never, today): copy through buffers.
        Err(up) => {
            let mut up = TokioIo::new(up);
            let mut upstream = Counted::new(tcp, counters.clone());
            tokio::io::copy_bidirectional_with_sizes(&mut up, &mut upstream, COPY_BUF, COPY_BUF)
                .await
                .map(|_| ())
        }
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        }
    }
    Err(last)
}
