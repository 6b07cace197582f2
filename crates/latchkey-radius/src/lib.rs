//! A RADIUS server (RFC 2865 over UDP) so VPNs and network gear can put
//! Latchkey's MFA in front of their users. This crate is the transport: the
//! packet codec ([`packet`]) and the UDP loop. What an Access-Request means
//! is decided by `latchkey_service::radius` (its module doc draws the flow).
//!
//! Packets from unknown addresses, with a missing or wrong
//! Message-Authenticator (RFC 3579 §3.2; which is also what a wrong shared
//! secret looks like), or that are not Access-Requests are silently
//! discarded, as the RFCs require: an answer could not be authenticated by
//! the NAS anyway, and silence gives an attacker nothing to measure. Their
//! log lines are rate-limited ([`DiscardLog`]): source addresses of UDP
//! are trivially forged.

pub mod packet;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_service::radius::{AccessAnswer, AccessRequest};
use latchkey_service::{App, ServiceResult};
use tokio::net::UdpSocket;
use zeroize::Zeroizing;

use packet::{Packet, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT, ACCESS_REQUEST};

pub use latchkey_service::radius::{CHALLENGE_SECS, PUSH_WAIT};

/// Retransmissions within this window get the cached answer (RFC 5080 §2.2.2).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// Requests handled at once; more are dropped (the NAS retransmits).
const MAX_IN_FLIGHT: usize = 64;

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// Not from a registered NAS address.
    UnknownClient,
    /// Not a RADIUS packet.
    Malformed,
    /// Not an Access-Request (accounting, a stray response, ...).
    NotAccessRequest,
    /// Missing or wrong Message-Authenticator: a wrong shared secret, or forged.
    BadAuthenticator,
    /// Too many requests in flight already; the NAS retransmits.
    Busy,
}

impl Discard {
    fn as_str(self) -> &'static str {
        match self {
            Discard::UnknownClient => "request from an unknown client",
            Discard::Malformed => "malformed packet",
            Discard::NotAccessRequest => "not an Access-Request",
            Discard::BadAuthenticator => "missing or invalid Message-Authenticator (or wrong shared secret)",
            Discard::Busy => "too many requests in flight",
        }
    }
}

/// Answer one datagram from `src`. `None`: discard silently.
pub async fn handle(app: &App, src: IpAddr, raw: &[u8]) -> ServiceResult<Option<Vec<u8>>> {
    Ok(answer(app, src, raw).await?.ok())
}

/// Answer one datagram from `src`, or say why it gets none.
async fn answer(app: &App, src: IpAddr, raw: &[u8]) -> ServiceResult<Result<Vec<u8>, Discard>> {
    let Some(nas) = app.radius_nas(src).await? else {
        return Ok(Err(Discard::UnknownClient));
    };
    let secret = &nas.secret;
    let Ok(req) = Packet::decode(raw) else {
        return Ok(Err(Discard::Malformed));
    };
    if req.code != ACCESS_REQUEST {
        return Ok(Err(Discard::NotAccessRequest));
    }
    if !packet::verify_request_message_authenticator(raw, secret) {
        return Ok(Err(Discard::BadAuthenticator));
    }
    let answer = |code: u8, message: &str, state: Option<&[u8]>| {
        let mut resp = Packet::reply_to(&req, code);
        if let Some(s) = state {
            resp.add(packet::STATE, s);
        }
        if !message.is_empty() {
            resp.add(packet::REPLY_MESSAGE, message.as_bytes());
        }
        Ok(packet::sign_response(resp, &req.authenticator, secret))
    };
    let reject = |message: &str| answer(ACCESS_REJECT, message, None);
    let username = match req.attr(packet::USER_NAME).map(std::str::from_utf8) {
        Some(Ok(u)) if !u.is_empty() => u.to_owned(),
        _ => return Ok(reject("User-Name is required")),
    };
    let Some(hidden) = req.attr(packet::USER_PASSWORD) else {
        return Ok(reject("Only PAP (User-Password) is supported"));
    };
    let password = match packet::decode_user_password(hidden, secret, &req.authenticator) {
        Ok(p) => Zeroizing::new(p),
        Err(_) => return Ok(reject("Malformed User-Password")),
    };
    let Ok(password) = std::str::from_utf8(&password).map(|s| Zeroizing::new(s.to_owned())) else {
        return Ok(reject("Sign-in failed"));
    };
    let calling_station = req
        .attr(packet::CALLING_STATION_ID)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let request = AccessRequest {
        username,
        password,
        calling_station,
        state: req.attr(packet::STATE).map(<[u8]>::to_vec),
    };
    Ok(match app.radius_access_request(&nas.client, request).await? {
        AccessAnswer::Accept => answer(ACCESS_ACCEPT, "", None),
        AccessAnswer::Reject(m) => reject(m),
        AccessAnswer::Challenge { state, message } => answer(ACCESS_CHALLENGE, &message, Some(state.as_bytes())),
    })
}

/// Log lines about discarded datagrams, bounded: anyone can send UDP with
/// any source address, so a line per datagram would let them fill the disk.
/// At most one line per (source, reason) per [`DISCARD_LOG_WINDOW`], at
/// most [`DISCARD_LINES_PER_WINDOW`] such lines per window in all, and one
/// summary line per window counting everything discarded.
pub struct DiscardLog {
    state: Mutex<DiscardState>,
}

/// One window of discard logging.
pub const DISCARD_LOG_WINDOW: Duration = Duration::from_secs(60);
pub const DISCARD_LINES_PER_WINDOW: usize = 16;

struct DiscardState {
    window_start: Instant,
    /// (source, reason) pairs given a line of their own in this window.
    logged: HashSet<(IpAddr, Discard)>,
    datagrams: u64,
    sources: HashSet<IpAddr>,
}

/// Distinct sources counted per window; past this the summary says "at least".
const MAX_COUNTED_SOURCES: usize = 4096;

impl DiscardLog {
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(DiscardState {
                window_start: now,
                logged: HashSet::new(),
                datagrams: 0,
                sources: HashSet::new(),
            }),
        }
    }

    /// Note one discarded datagram from `src` at `now`.
    pub fn note(&self, src: IpAddr, why: Discard, now: Instant) {
        let mut s = self.state.lock().expect("discard log lock");
        if now.duration_since(s.window_start) >= DISCARD_LOG_WINDOW {
            if s.datagrams > 0 {
                let capped = s.sources.len() >= MAX_COUNTED_SOURCES;
                tracing::warn!(
                    datagrams = s.datagrams,
                    addresses = s.sources.len(),
                    "RADIUS: {} datagrams from {}{} addresses discarded in the last {} s",
                    s.datagrams,
                    if capped { "at least " } else { "" },
                    s.sources.len(),
                    now.duration_since(s.window_start).as_secs()
                );
            }
            s.window_start = now;
            s.logged.clear();
            s.datagrams = 0;
            s.sources.clear();
        }
        s.datagrams += 1;
        if s.sources.len() < MAX_COUNTED_SOURCES {
            s.sources.insert(src);
        }
        if s.logged.len() < DISCARD_LINES_PER_WINDOW && s.logged.insert((src, why)) {
            tracing::warn!(%src, "RADIUS: {} discarded (further ones from this address are only counted for a minute)", why.as_str());
        }
    }
}

enum Seen {
    InFlight,
    Answered(Vec<u8>),
}

type DuplicateKey = (SocketAddr, u8, [u8; 16]);

/// Serve RADIUS on `socket` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    socket: UdpSocket,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let seen: Arc<Mutex<HashMap<DuplicateKey, (Instant, Seen)>>> = Arc::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let discards = Arc::new(DiscardLog::new(Instant::now()));
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; packet::MAX_LEN];
    loop {
        let (n, src) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "RADIUS receive failed");
                    continue;
                }
            },
        };
        if n < packet::HEADER_LEN {
            continue;
        }
        let data = buf[..n].to_vec();
        let key: DuplicateKey = (src, data[1], data[4..20].try_into().expect("16 bytes"));
        {
            let mut seen = seen.lock().expect("not poisoned");
            seen.retain(|_, (at, _)| at.elapsed() < DUPLICATE_WINDOW);
            match seen.get(&key) {
                Some((_, Seen::Answered(resp))) => {
                    let (socket, resp) = (socket.clone(), resp.clone());
                    tokio::spawn(async move { socket.send_to(&resp, src).await });
                    continue;
                }
                Some((_, Seen::InFlight)) => continue,
                None => {
                    seen.insert(key, (Instant::now(), Seen::InFlight));
                }
            }
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            seen.lock().expect("not poisoned").remove(&key);
            discards.note(src.ip(), Discard::Busy, Instant::now());
            continue;
        };
        let (app, socket, seen, discards) = (app.clone(), socket.clone(), seen.clone(), discards.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let resp = match answer(&app, src.ip(), &data).await {
                Ok(Ok(r)) => Some(r),
                Ok(Err(why)) => {
                    discards.note(src.ip(), why, Instant::now());
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "RADIUS request failed");
                    None
                }
            };
            {
                let mut s = seen.lock().expect("not poisoned");
                match &resp {
                    Some(r) => s.insert(key, (Instant::now(), Seen::Answered(r.clone()))),
                    None => s.remove(&key),
                };
            }
            if let Some(r) = resp {
                if let Err(e) = socket.send_to(&r, src).await {
                    tracing::warn!(error = %e, "RADIUS send failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines written while `f` runs.
    fn lines_during(f: impl FnOnce()) -> Vec<String> {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn discards_are_logged_once_per_source_and_summarised_per_window() {
        let t0 = Instant::now();
        let log = DiscardLog::new(t0);
        let one: IpAddr = "198.51.100.1".parse().unwrap();
        let lines = lines_during(|| {
            for _ in 0..10_000 {
                log.note(one, Discard::UnknownClient, t0 + Duration::from_secs(1));
            }
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        // Forged sources: a line each only up to the per-window budget.
        let lines = lines_during(|| {
            for i in 0..5_000u32 {
                log.note(
                    IpAddr::from(i.to_be_bytes()),
                    Discard::UnknownClient,
                    t0 + Duration::from_secs(2),
                );
            }
        });
        assert_eq!(lines.len(), DISCARD_LINES_PER_WINDOW - 1, "{lines:?}");
        // The next window opens with a summary of the last one.
        let lines = lines_during(|| log.note(one, Discard::UnknownClient, t0 + DISCARD_LOG_WINDOW));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("15000 datagrams from at least 4096 addresses discarded in the last 60 s"),
            "{lines:?}"
        );
    }
}
