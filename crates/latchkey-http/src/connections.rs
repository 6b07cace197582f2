//! Accepting and serving TCP connections, for plain http ([`crate::serve`])
//! and https ([`crate::tls::serve_tls`]) alike, so that one client cannot
//! take the server offline by opening sockets and sending nothing: each
//! socket holds a file descriptor, and a process that runs out of them can
//! accept nobody (not even `/healthz`).
//!
//! ```text
//!  accept ── over the global cap, or over the per-address cap ──▶ closed at once
//!    │        (peers named by --trusted-proxy skip the per-address cap)
//!    ▼
//!  TLS handshake and first request head ── not done within
//!    │                                      header_read_timeout ──▶ closed
//!    ▼
//!  serving ── HTTP/1 waiting for a request head longer than header_read_timeout,
//!    │        or nothing sent either way and no request in flight for
//!    │        idle_timeout ──▶ closed after the current request
//!    ▼
//!  shutdown: stop accepting; open requests get DRAIN to finish, then everything closes
//! ```
//!
//! Caps count connections, not requests: a browser keeps a handful open.
//! IPv6 clients are counted per /64, the block one host usually has.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use latchkey_service::App;

/// How long open requests may run on after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);
/// Descriptors kept back from connections: the database pool (with its WAL
/// files), the RADIUS socket, logs, outbound HTTP clients.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Connection caps and timeouts (`latchkey serve --max-connections` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at once, from everybody.
    pub max_connections: usize,
    /// Open connections at once from one address (an IPv6 /64).
    pub max_per_address: usize,
    /// Time for the TLS handshake and a request head to arrive.
    pub header_read_timeout: Duration,
    /// A connection with nothing sent either way and no request in flight
    /// this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ConnLimits {
    /// Lower the caps to fit under the process's descriptor limit, keeping
    /// [`RESERVED_DESCRIPTORS`] (or a quarter of a small limit) for the rest
    /// of the process. Returns whether anything was lowered.
    pub fn fit_descriptors(&mut self, open_files_limit: u64) -> bool {
        let reserve = RESERVED_DESCRIPTORS.min(open_files_limit / 4);
        let room = usize::try_from(open_files_limit.saturating_sub(reserve))
            .unwrap_or(usize::MAX)
            .max(1);
        let before = *self;
        self.max_connections = self.max_connections.min(room);
        self.max_per_address = self.max_per_address.min(self.max_connections);
        before != *self
    }
}

/// Which key a peer is counted under: its IPv4 address, or its IPv6 /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Open connections, in total and per address.
#[derive(Default)]
struct Tally {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection's place in the [`Tally`]; given back on drop.
struct Slot {
    tally: Arc<Tally>,
    key: Option<IpAddr>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Global,
    PerAddress,
}

impl Tally {
    /// Admit a connection from `ip` unless a cap is reached; `exempt` peers
    /// (trusted proxies) count only against the global cap.
    fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool, limits: &ConnLimits) -> Result<Slot, Refused> {
        let mut open = self.open.lock().expect("tally lock");
        if open.0 >= limits.max_connections {
            return Err(Refused::Global);
        }
        let key = (!exempt).then(|| address_key(ip));
        if let Some(k) = key {
            let n = open.1.entry(k).or_insert(0);
            if *n >= limits.max_per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        open.0 += 1;
        Ok(Slot {
            tally: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.tally.open.lock().expect("tally lock");
        open.0 -= 1;
        if let Some(k) = self.key {
            if let Some(n) = open.1.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&k);
                }
            }
        }
    }
}

/// What a connection has been doing, for its timeouts.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last byte read or written.
    last_ms: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicUsize,
}

/// What the watchdog of one connection decides at a point in time.
#[derive(Debug, PartialEq, Eq)]
enum Watch {
    /// Look again at this instant.
    Until(Instant),
    /// No request head within the header-read timeout: drop the socket.
    NoRequest,
    /// Quiet too long: close once the current exchange ends.
    Idle,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn watch(&self, now: Instant, limits: &ConnLimits) -> Watch {
        if self.requests.load(Ordering::Relaxed) == 0 {
            let deadline = self.started + limits.header_read_timeout;
            return if now >= deadline {
                Watch::NoRequest
            } else {
                Watch::Until(deadline)
            };
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // A slow handler is not an idle client.
            return Watch::Until(now + limits.idle_timeout);
        }
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let deadline = last + limits.idle_timeout;
        if now >= deadline {
            Watch::Idle
        } else {
            Watch::Until(deadline)
        }
    }
}

/// A request being handled; counts as activity until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> Self {
        a.requests.fetch_add(1, Ordering::Relaxed);
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records when bytes move through it.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S> Watched<S> {
    fn wrote(&self, r: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refusals and accept errors, logged at most once a minute each (a flood
/// of them must not become a flood of log lines).
#[derive(Default)]
struct Complaints {
    refused: HashMap<&'static str, (Option<Instant>, u64)>,
}

impl Complaints {
    fn note(&mut self, what: &'static str, detail: impl FnOnce() -> String) {
        let (last, unreported) = self.refused.entry(what).or_insert((None, 0));
        *unreported += 1;
        if !matches!(last, Some(t) if t.elapsed() < Duration::from_secs(60)) {
            tracing::warn!(
                count = *unreported,
                "{what} ({}); logged at most once a minute",
                detail()
            );
            *last = Some(Instant::now());
            *unreported = 0;
        }
    }
}

/// Serve `router` on `listener` (with TLS if `tls` is set) until `shutdown`.
pub(crate) async fn serve(
    app: Arc<App>,
    web: crate::WebConfig,
    limits: ConnLimits,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let trusted = web.trusted_proxies.clone();
    let router = crate::router(app.clone(), web);
    let housekeeping = latchkey_service::ops::spawn_housekeeping(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut complaints = Complaints::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of descriptors (or memory): the pending connection
                    // stays queued; retry shortly instead of spinning.
                    complaints.note("accept failed", || e.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let exempt = trusted.iter().any(|n| n.contains(&peer.ip()));
        let slot = match tally.admit(peer.ip(), exempt, &limits) {
            Ok(s) => s,
            Err(why) => {
                drop(stream);
                match why {
                    Refused::Global => complaints.note("connection refused: --max-connections reached", || {
                        format!("{} open", limits.max_connections)
                    }),
                    Refused::PerAddress => complaints
                        .note("connection refused: --max-connections-per-address reached", || {
                            format!("latest from {}", address_key(peer.ip()))
                        }),
                }
                continue;
            }
        };
        let conn = Conn {
            router: router.clone(),
            builder: builder.clone(),
            limits,
            peer,
            stopped: stopped.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            conn.run(stream, tls).await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the drain time"
        );
    }
    connections.shutdown().await;
    housekeeping.abort();
    Ok(())
}

/// One accepted connection.
struct Conn {
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: ConnLimits,
    peer: SocketAddr,
    stopped: watch::Receiver<bool>,
}

impl Conn {
    async fn run(self, stream: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let activity = Arc::new(Activity::new(Instant::now()));
        match tls {
            None => self.http(stream, activity).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(s)) => self.http(s, activity).await,
                    Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn http<S>(self, stream: S, activity: Arc<Activity>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            router,
            builder,
            limits,
            peer,
            mut stopped,
        } = self;
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = InFlight::begin(&requests);
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await;
                drop(in_flight);
                resp
            }
        });
        let conn = builder.serve_connection(io, service).into_owned();
        tokio::pin!(conn);
        // Once closing: the instant after which the socket is dropped regardless.
        let mut closing: Option<Instant> = None;
        loop {
            let wake = match closing {
                Some(at) => at,
                None => match activity.watch(Instant::now(), &limits) {
                    Watch::Until(at) => at,
                    Watch::NoRequest => return,
                    Watch::Idle => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + limits.header_read_timeout);
                        continue;
                    }
                },
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stopped.wait_for(|s| *s), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + DRAIN);
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if closing.is_some() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_give_back_on_drop() {
        let limits = ConnLimits {
            max_connections: 3,
            max_per_address: 2,
            ..ConnLimits::default()
        };
        let t = Arc::new(Tally::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = t.admit(a, false, &limits).unwrap();
        let _a2 = t.admit(a, false, &limits).unwrap();
        assert_eq!(t.admit(a, false, &limits).err(), Some(Refused::PerAddress));
        let _b1 = t.admit(b, false, &limits).unwrap();
        assert_eq!(t.admit(b, false, &limits).err(), Some(Refused::Global));
        drop(a1);
        let _a3 = t.admit(a, false, &limits).unwrap();
        assert_eq!(
            t.admit(b, true, &limits).err(),
            Some(Refused::Global),
            "exempt peers still count globally"
        );
    }

    #[test]
    fn trusted_proxies_skip_the_per_address_cap() {
        let limits = ConnLimits {
            max_connections: 10,
            max_per_address: 1,
            ..ConnLimits::default()
        };
        let t = Arc::new(Tally::default());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..5).map(|_| t.admit(proxy, true, &limits).unwrap()).collect();
        assert_eq!(held.len(), 5);
        let _one = t.admit(proxy, false, &limits).unwrap();
        assert_eq!(t.admit(proxy, false, &limits).err(), Some(Refused::PerAddress));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
    }

    #[test]
    fn caps_fit_under_the_descriptor_limit() {
        let mut l = ConnLimits::default();
        assert!(!l.fit_descriptors(1 << 20));
        assert_eq!(l, ConnLimits::default());
        assert!(l.fit_descriptors(512));
        assert_eq!(l.max_connections, 512 - 128);
        assert_eq!(l.max_per_address, 256);
        let mut l = ConnLimits::default();
        l.fit_descriptors(100);
        assert_eq!((l.max_connections, l.max_per_address), (75, 75));
    }

    #[test]
    fn silent_and_idle_connections_expire() {
        let limits = ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnLimits::default()
        };
        let t0 = Instant::now();
        let a = Arc::new(Activity::new(t0));
        let s = Duration::from_secs;
        assert_eq!(a.watch(t0, &limits), Watch::Until(t0 + s(10)));
        // Bytes alone (a trickled request head) do not extend the first deadline.
        a.last_ms.store(9_000, Ordering::Relaxed);
        assert_eq!(a.watch(t0 + s(10), &limits), Watch::NoRequest);
        let req = InFlight::begin(&a);
        assert!(
            matches!(a.watch(t0 + s(500), &limits), Watch::Until(_)),
            "in flight is not idle"
        );
        drop(req);
        let last = t0 + Duration::from_millis(a.last_ms.load(Ordering::Relaxed));
        assert_eq!(a.watch(last, &limits), Watch::Until(last + s(60)));
        assert_eq!(a.watch(last + s(60), &limits), Watch::Idle);
    }
}
