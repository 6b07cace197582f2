//! Detections over sign-in events and account posture: pure functions that
//! take the events (or facts) and the current time and return what they
//! found. The server loads the events, runs these, deduplicates and stores
//! the results as alerts, and turns the ones about a sign-in into its risk.
//!
//! An alert raised from a [`Detection`] walks these states (the server keeps
//! them; resolved is final):
//!
//! ```text
//!   open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
//!     └───────────────────resolve─────────────────────▲
//! ```
//!
//! Push outcomes arrive in the sign-in log with methods `["push"]` and one of
//! the `push_*` reasons below; a push approval is a success with `push` in its
//! methods.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::policy::{RiskLevel, PORTAL_APPLICATION};
use crate::CoreError;

/// One sign-in attempt as the detections see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInEvent {
    pub id: i64,
    pub at: i64,
    /// None when the username is unknown to Latchkey.
    pub user_id: Option<String>,
    pub username: String,
    pub application: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// Named location of the source, when it falls in one.
    pub location: Option<String>,
    pub success: bool,
    pub reason: Option<String>,
    /// Methods tried and used.
    pub methods: Vec<String>,
}

impl SignInEvent {
    fn is_push(&self) -> bool {
        self.methods.iter().any(|m| m == "push") || self.reason.as_deref().is_some_and(|r| r.starts_with("push_"))
    }

    /// A wrong password: what spray and stuffing are made of.
    fn is_password_failure(&self) -> bool {
        !self.success && self.reason.as_deref() == Some("invalid_credentials")
    }

    fn application(&self) -> &str {
        self.application.as_deref().unwrap_or(PORTAL_APPLICATION)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionKind {
    PushFatigue,
    PasswordSpray,
    CredentialStuffing,
    UnusualLocation,
    ImpossibleTravel,
    FailureRateSpike,
    PrivilegedWithoutPhishingResistant,
    ExceptionNearExpiry,
    ExceptionExpired,
    BreakGlassTestOverdue,
    RegistrationAfterTap,
}

impl DetectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectionKind::PushFatigue => "push_fatigue",
            DetectionKind::PasswordSpray => "password_spray",
            DetectionKind::CredentialStuffing => "credential_stuffing",
            DetectionKind::UnusualLocation => "unusual_location",
            DetectionKind::ImpossibleTravel => "impossible_travel",
            DetectionKind::FailureRateSpike => "failure_rate_spike",
            DetectionKind::PrivilegedWithoutPhishingResistant => "privileged_without_phishing_resistant",
            DetectionKind::ExceptionNearExpiry => "exception_near_expiry",
            DetectionKind::ExceptionExpired => "exception_expired",
            DetectionKind::BreakGlassTestOverdue => "break_glass_test_overdue",
            DetectionKind::RegistrationAfterTap => "registration_after_tap",
        }
    }
}

/// Something a detection found. `target` names what it is about
/// (`user:NAME`, `ip:ADDR`, `app:NAME`, `exception:ID`, `global`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub kind: DetectionKind,
    pub severity: Severity,
    pub target: String,
    pub details: serde_json::Value,
}

/// Every threshold, configurable (serve flags); defaults in [`Default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    pub push_window_secs: i64,
    /// Push prompts (any outcome) to one user within the window.
    pub push_prompts: usize,
    /// Denials (denied, reported, wrong number) within the window.
    pub push_denials: usize,
    pub push_timeouts: usize,
    pub spray_window_secs: i64,
    /// Distinct users with a wrong password from one source.
    pub spray_users: usize,
    pub stuffing_window_secs: i64,
    pub stuffing_min_attempts: usize,
    pub stuffing_users: usize,
    pub stuffing_failure_ratio: f64,
    /// Stuffing needs many sources, or many names nobody here has.
    pub stuffing_sources: usize,
    pub stuffing_unknown_ratio: f64,
    pub spike_window_secs: i64,
    pub spike_baseline_secs: i64,
    pub spike_min_failures: usize,
    /// Recent failure ratio must exceed baseline ratio × factor and `spike_min_ratio`.
    pub spike_factor: f64,
    pub spike_min_ratio: f64,
    pub travel_max_kmh: f64,
    /// Short hops between nearby ranges are not travel worth an alert.
    pub travel_min_km: f64,
    pub exception_warn_secs: i64,
    pub tap_registration_window_secs: i64,
    /// The same kind about the same target raises once within this window.
    pub dedup_secs: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            push_window_secs: 600,
            push_prompts: 5,
            push_denials: 3,
            push_timeouts: 3,
            spray_window_secs: 3600,
            spray_users: 10,
            stuffing_window_secs: 3600,
            stuffing_min_attempts: 50,
            stuffing_users: 20,
            stuffing_failure_ratio: 0.9,
            stuffing_sources: 5,
            stuffing_unknown_ratio: 0.3,
            spike_window_secs: 900,
            spike_baseline_secs: 86_400,
            spike_min_failures: 20,
            spike_factor: 3.0,
            spike_min_ratio: 0.5,
            travel_max_kmh: 900.0,
            travel_min_km: 300.0,
            exception_warn_secs: 7 * 86_400,
            tap_registration_window_secs: 3600,
            dedup_secs: 3600,
        }
    }
}

impl Thresholds {
    /// How far back the windowed detections need whole events (the spike
    /// baseline before that is counted, not loaded).
    pub fn short_lookback_secs(&self) -> i64 {
        self.push_window_secs
            .max(self.spray_window_secs)
            .max(self.stuffing_window_secs)
            .max(self.spike_window_secs)
            .max(self.tap_registration_window_secs)
    }

    /// How far back the windowed detections look.
    pub fn lookback_secs(&self) -> i64 {
        self.push_window_secs
            .max(self.spray_window_secs)
            .max(self.stuffing_window_secs)
            .max(self.spike_baseline_secs)
            .max(self.tap_registration_window_secs)
    }
}

fn in_window(e: &SignInEvent, now: i64, secs: i64) -> bool {
    e.at > now - secs && e.at <= now
}

fn user_target(username: &str) -> String {
    format!("user:{username}")
}

/// Push fatigue / MFA bombing: per user, push prompts, denials and timeouts
/// within the window. An approval after denials is critical: the user may
/// have given in.
pub fn push_fatigue(events: &[SignInEvent], now: i64, t: &Thresholds) -> Vec<Detection> {
    #[derive(Default)]
    struct Count {
        prompts: usize,
        denials: usize,
        timeouts: usize,
        reported: usize,
        approved_after_failures: bool,
        failures: usize,
    }
    let mut per_user: BTreeMap<&str, Count> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| in_window(e, now, t.push_window_secs) && e.is_push())
    {
        let c = per_user.entry(e.username.as_str()).or_default();
        c.prompts += 1;
        match e.reason.as_deref() {
            Some("push_denied" | "push_wrong_number") => c.denials += 1,
            Some("push_reported") => {
                c.denials += 1;
                c.reported += 1;
            }
            Some("push_timeout") => c.timeouts += 1,
            _ => {}
        }
        if e.success {
            c.approved_after_failures |= c.failures >= 2;
        } else {
            c.failures += 1;
        }
    }
    per_user
        .into_iter()
        .filter(|(_, c)| c.prompts >= t.push_prompts || c.denials >= t.push_denials || c.timeouts >= t.push_timeouts)
        .map(|(user, c)| Detection {
            kind: DetectionKind::PushFatigue,
            severity: if c.approved_after_failures {
                Severity::Critical
            } else {
                Severity::High
            },
            target: user_target(user),
            details: json!({
                "prompts": c.prompts, "denials": c.denials, "timeouts": c.timeouts, "reported": c.reported,
                "approved_after_failures": c.approved_after_failures, "window_secs": t.push_window_secs,
            }),
        })
        .collect()
}

/// Password spray: many distinct users failing the password from one source.
pub fn password_spray(events: &[SignInEvent], now: i64, t: &Thresholds) -> Vec<Detection> {
    let mut per_source: BTreeMap<IpAddr, (BTreeSet<&str>, usize)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| in_window(e, now, t.spray_window_secs) && e.is_password_failure())
    {
        if let Some(ip) = e.source_ip {
            let s = per_source.entry(ip).or_default();
            s.0.insert(e.username.as_str());
            s.1 += 1;
        }
    }
    per_source
        .into_iter()
        .filter(|(_, (users, _))| users.len() >= t.spray_users)
        .map(|(ip, (users, attempts))| Detection {
            kind: DetectionKind::PasswordSpray,
            severity: Severity::High,
            target: format!("ip:{ip}"),
            details: json!({ "users": users.len(), "attempts": attempts, "window_secs": t.spray_window_secs }),
        })
        .collect()
}

/// Credential stuffing: password attempts across the service with a high
/// failure ratio over many users, from many sources or with many usernames
/// nobody here has (lists leaked elsewhere).
pub fn credential_stuffing(events: &[SignInEvent], now: i64, t: &Thresholds) -> Vec<Detection> {
    let mut attempts = 0usize;
    let mut failures = 0usize;
    let mut unknown = 0usize;
    let mut users = HashSet::new();
    let mut sources = HashSet::new();
    for e in events.iter().filter(|e| in_window(e, now, t.stuffing_window_secs)) {
        if e.is_password_failure() {
            attempts += 1;
            failures += 1;
            unknown += usize::from(e.user_id.is_none());
            users.insert(e.username.as_str());
            if let Some(ip) = e.source_ip {
                sources.insert(ip);
            }
        } else if e.success {
            attempts += 1;
        }
    }
    if attempts < t.stuffing_min_attempts || users.len() < t.stuffing_users {
        return vec![];
    }
    let failure_ratio = failures as f64 / attempts as f64;
    let unknown_ratio = unknown as f64 / failures.max(1) as f64;
    if failure_ratio < t.stuffing_failure_ratio
        || (sources.len() < t.stuffing_sources && unknown_ratio < t.stuffing_unknown_ratio)
    {
        return vec![];
    }
    vec![Detection {
        kind: DetectionKind::CredentialStuffing,
        severity: Severity::High,
        target: "global".into(),
        details: json!({
            "attempts": attempts, "failures": failures, "users": users.len(), "sources": sources.len(),
            "unknown_users": unknown, "failure_ratio": failure_ratio, "window_secs": t.stuffing_window_secs,
        }),
    }]
}

/// Failures and attempts per application (`latchkey` for the portal).
pub type AppCounts = BTreeMap<String, (usize, usize)>;

/// Failure-rate spike per application: the recent failure ratio against the
/// ratio of the baseline before it.
pub fn failure_rate_spike(events: &[SignInEvent], now: i64, t: &Thresholds) -> Vec<Detection> {
    let mut baseline = AppCounts::new();
    for e in events
        .iter()
        .filter(|e| in_window(e, now, t.spike_baseline_secs) && !in_window(e, now, t.spike_window_secs))
    {
        let c = baseline.entry(e.application().to_owned()).or_default();
        c.0 += usize::from(!e.success);
        c.1 += 1;
    }
    failure_rate_spike_against(events, &baseline, now, t)
}

/// The same with the baseline counted elsewhere (the server asks the
/// database for counts instead of loading a day of rows).
pub fn failure_rate_spike_against(
    events: &[SignInEvent],
    baseline: &AppCounts,
    now: i64,
    t: &Thresholds,
) -> Vec<Detection> {
    let mut recent = AppCounts::new();
    for e in events.iter().filter(|e| in_window(e, now, t.spike_window_secs)) {
        let c = recent.entry(e.application().to_owned()).or_default();
        c.0 += usize::from(!e.success);
        c.1 += 1;
    }
    let ratio = |(f, n): (usize, usize)| if n == 0 { 0.0 } else { f as f64 / n as f64 };
    recent
        .into_iter()
        .filter_map(|(app, r)| {
            let b = baseline.get(&app).copied().unwrap_or_default();
            (r.0 >= t.spike_min_failures && ratio(r) >= t.spike_min_ratio && ratio(r) > ratio(b) * t.spike_factor).then(
                || Detection {
                    kind: DetectionKind::FailureRateSpike,
                    severity: Severity::Medium,
                    target: format!("app:{app}"),
                    details: json!({
                        "failures": r.0, "attempts": r.1, "failure_ratio": ratio(r),
                        "baseline_ratio": ratio(b), "window_secs": t.spike_window_secs,
                    }),
                },
            )
        })
        .collect()
}

/// Where a sign-in came from, as compared for "never seen": the named
/// location if it has one, else its network (/24 for IPv4, /48 for IPv6).
pub fn place_key(location: Option<&str>, ip: Option<IpAddr>) -> Option<String> {
    if let Some(l) = location {
        return Some(format!("location:{l}"));
    }
    let net = match ip? {
        IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 24),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 48),
    }
    .expect("prefix lengths are valid");
    Some(format!("network:{}", net.trunc()))
}

/// Unusual location: a successful sign-in from a place this user was never
/// seen at. `history` is the user's earlier successful sign-ins; with none
/// there is nothing to compare against (the first sign-in sets the baseline).
pub fn unusual_location(ev: &SignInEvent, history: &[SignInEvent]) -> Option<Detection> {
    if !ev.success || ev.user_id.is_none() || history.is_empty() {
        return None;
    }
    let key = place_key(ev.location.as_deref(), ev.source_ip)?;
    let seen = history
        .iter()
        .any(|h| place_key(h.location.as_deref(), h.source_ip).as_deref() == Some(key.as_str()));
    (!seen).then(|| Detection {
        kind: DetectionKind::UnusualLocation,
        severity: Severity::Medium,
        target: user_target(&ev.username),
        details: json!({ "place": key, "source_ip": ev.source_ip, "signin_id": ev.id, "known_places": history.len() }),
    })
}

/// Geolocated IP ranges, loaded from CSV lines `cidr,latitude,longitude[,label]`
/// (`#` comments and blank lines ignored). The most specific range wins.
#[derive(Debug, Clone, Default)]
pub struct GeoTable {
    /// Sorted most specific first.
    ranges: Vec<(IpNet, GeoPoint)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    pub label: String,
}

impl GeoTable {
    pub fn parse_csv(text: &str) -> Result<GeoTable, CoreError> {
        let mut ranges = vec![];
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| CoreError::InvalidInput(format!("geo ranges line {}: {what}", n + 1));
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if cols.len() < 3 {
                return Err(bad("expected cidr,latitude,longitude[,label]"));
            }
            if n == 0 && cols[1].parse::<f64>().is_err() {
                continue; // a header row
            }
            let net: IpNet = cols[0]
                .parse()
                .or_else(|_| cols[0].parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| bad("not a CIDR range"))?;
            let lat: f64 = cols[1].parse().map_err(|_| bad("latitude"))?;
            let lon: f64 = cols[2].parse().map_err(|_| bad("longitude"))?;
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(bad("coordinates out of range"));
            }
            let label = cols.get(3).map(|s| s.to_string()).unwrap_or_else(|| net.to_string());
            ranges.push((net.trunc(), GeoPoint { lat, lon, label }));
        }
        ranges.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()));
        Ok(GeoTable { ranges })
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn locate(&self, ip: IpAddr) -> Option<&GeoPoint> {
        self.ranges.iter().find(|(n, _)| n.contains(&ip)).map(|(_, p)| p)
    }
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(a: &GeoPoint, b: &GeoPoint) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Impossible travel: the speed needed between the user's previous
/// successful sign-in and this one exceeds what an airliner does.
pub fn impossible_travel(prev: &SignInEvent, cur: &SignInEvent, geo: &GeoTable, t: &Thresholds) -> Option<Detection> {
    if !cur.success || !prev.success {
        return None;
    }
    let a = geo.locate(prev.source_ip?)?;
    let b = geo.locate(cur.source_ip?)?;
    let km = distance_km(a, b);
    if km < t.travel_min_km {
        return None;
    }
    // Same-second sign-ins count as one second apart.
    let hours = ((cur.at - prev.at).max(1)) as f64 / 3600.0;
    let kmh = km / hours;
    (kmh > t.travel_max_kmh).then(|| Detection {
        kind: DetectionKind::ImpossibleTravel,
        severity: Severity::High,
        target: user_target(&cur.username),
        details: json!({
            "from": a.label, "to": b.label, "km": km.round(), "kmh": kmh.round(),
            "secs": cur.at - prev.at, "signin_id": cur.id,
        }),
    })
}

/// A user's posture for the account-level detections.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountPosture {
    pub username: String,
    pub privileged: bool,
    pub has_phishing_resistant: bool,
}

/// Privileged users without a phishing-resistant method.
pub fn privileged_without_phishing_resistant(accounts: &[AccountPosture]) -> Vec<Detection> {
    accounts
        .iter()
        .filter(|a| a.privileged && !a.has_phishing_resistant)
        .map(|a| Detection {
            kind: DetectionKind::PrivilegedWithoutPhishingResistant,
            severity: Severity::High,
            target: user_target(&a.username),
            details: json!({}),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionFacts {
    pub id: String,
    pub policy_id: String,
    /// `user:NAME` or `group:NAME`.
    pub subject: String,
    pub approved_by: String,
    pub expires_at: i64,
    pub revoked: bool,
}

/// Exceptions ending within the warning window, and those that ended within
/// it (access changed for someone without anyone acting: tell them).
pub fn exception_expiry(exceptions: &[ExceptionFacts], now: i64, t: &Thresholds) -> Vec<Detection> {
    exceptions
        .iter()
        .filter(|x| !x.revoked)
        .filter_map(|x| {
            let (kind, severity) = if x.expires_at > now && x.expires_at <= now + t.exception_warn_secs {
                (DetectionKind::ExceptionNearExpiry, Severity::Medium)
            } else if x.expires_at <= now && x.expires_at > now - t.exception_warn_secs {
                (DetectionKind::ExceptionExpired, Severity::Low)
            } else {
                return None;
            };
            Some(Detection {
                kind,
                severity,
                target: format!("exception:{}", x.id),
                details: json!({
                    "policy_id": x.policy_id, "subject": x.subject, "approved_by": x.approved_by,
                    "expires_at": x.expires_at,
                }),
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakGlassFacts {
    pub username: String,
    pub created_at: i64,
    pub test_interval_days: i64,
    pub last_test_at: Option<i64>,
}

/// Break-glass accounts whose periodic test sign-in is overdue.
pub fn break_glass_test_overdue(accounts: &[BreakGlassFacts], now: i64) -> Vec<Detection> {
    accounts
        .iter()
        .filter_map(|a| {
            let due = a.last_test_at.unwrap_or(a.created_at) + a.test_interval_days * 86_400;
            (now > due).then(|| Detection {
                kind: DetectionKind::BreakGlassTestOverdue,
                severity: Severity::High,
                target: user_target(&a.username),
                details: json!({ "due_at": due, "last_test_at": a.last_test_at, "overdue_secs": now - due }),
            })
        })
        .collect()
}

/// A method registered within the window after a Temporary Access Pass
/// sign-in from a place the user was never seen at: the pattern of a
/// social-engineered helpdesk handing an attacker the account.
pub fn registration_after_tap(
    tap_signin: &SignInEvent,
    history: &[SignInEvent],
    registrations: &[(i64, String)],
    t: &Thresholds,
) -> Option<Detection> {
    if !tap_signin.success || !tap_signin.methods.iter().any(|m| m == "temporary_access_pass") {
        return None;
    }
    // With no history every place is new; a new employee's first TAP is normal.
    unusual_location(tap_signin, history)?;
    let (at, method) = registrations
        .iter()
        .find(|(at, _)| *at >= tap_signin.at && *at <= tap_signin.at + t.tap_registration_window_secs)?;
    Some(Detection {
        kind: DetectionKind::RegistrationAfterTap,
        severity: Severity::High,
        target: user_target(&tap_signin.username),
        details: json!({
            "method": method, "registered_at": at, "tap_signin_at": tap_signin.at,
            "source_ip": tap_signin.source_ip, "place": place_key(tap_signin.location.as_deref(), tap_signin.source_ip),
        }),
    })
}

/// Every windowed sign-in detection over the events, in a stable order.
pub fn windowed(events: &[SignInEvent], now: i64, t: &Thresholds) -> Vec<Detection> {
    let mut out = push_fatigue(events, now, t);
    out.extend(password_spray(events, now, t));
    out.extend(credential_stuffing(events, now, t));
    out.extend(failure_rate_spike(events, now, t));
    out
}

/// The same over events of the last [`Thresholds::short_lookback_secs`] only,
/// with the failure-spike baseline given as counts.
pub fn windowed_against(events: &[SignInEvent], baseline: &AppCounts, now: i64, t: &Thresholds) -> Vec<Detection> {
    let mut out = push_fatigue(events, now, t);
    out.extend(password_spray(events, now, t));
    out.extend(credential_stuffing(events, now, t));
    out.extend(failure_rate_spike_against(events, baseline, now, t));
    out
}

/// Per-user baseline of places, built incrementally (the benchmark and any
/// caller replaying a log in order): each success is checked against the
/// places seen before it, then added.
#[derive(Debug, Default)]
pub struct PlaceBaseline {
    seen: HashMap<String, HashSet<String>>,
    last: HashMap<String, SignInEvent>,
}

impl PlaceBaseline {
    pub fn observe(&mut self, ev: &SignInEvent, geo: &GeoTable, t: &Thresholds) -> Vec<Detection> {
        let mut out = vec![];
        let (Some(user), true) = (ev.user_id.as_ref(), ev.success) else {
            return out;
        };
        let Some(key) = place_key(ev.location.as_deref(), ev.source_ip) else {
            return out;
        };
        let places = self.seen.entry(user.clone()).or_default();
        if !places.is_empty() && !places.contains(&key) {
            out.push(Detection {
                kind: DetectionKind::UnusualLocation,
                severity: Severity::Medium,
                target: user_target(&ev.username),
                details: json!({ "place": key, "signin_id": ev.id }),
            });
        }
        places.insert(key);
        if let Some(prev) = self.last.get(user) {
            out.extend(impossible_travel(prev, ev, geo, t));
        }
        self.last.insert(user.clone(), ev.clone());
        out
    }
}

/// What a sign-in knows about itself and about alerts on its user or source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskSignals {
    /// This sign-in comes from a place the user was never seen at.
    pub unusual_location: bool,
    /// Reaching here from the last successful sign-in is impossible.
    pub impossible_travel: bool,
    /// Kinds of unresolved recent alerts about this user or this source.
    pub alert_kinds: Vec<DetectionKind>,
}

/// Sign-in risk for conditional access: spray or stuffing from this source,
/// or impossible travel, is high; push fatigue, an unusual place, or a
/// suspicious registration is medium; a failure spike is low.
pub fn sign_in_risk(s: &RiskSignals) -> RiskLevel {
    use DetectionKind::*;
    let from_alerts = s
        .alert_kinds
        .iter()
        .map(|k| match k {
            PasswordSpray | CredentialStuffing | ImpossibleTravel => RiskLevel::High,
            PushFatigue | UnusualLocation | RegistrationAfterTap => RiskLevel::Medium,
            FailureRateSpike => RiskLevel::Low,
            _ => RiskLevel::None,
        })
        .max()
        .unwrap_or(RiskLevel::None);
    let live = if s.impossible_travel {
        RiskLevel::High
    } else if s.unusual_location {
        RiskLevel::Medium
    } else {
        RiskLevel::None
    };
    from_alerts.max(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn ev(
        id: i64,
        at: i64,
        user: &str,
        ip: &str,
        success: bool,
        reason: Option<&str>,
        methods: &[&str],
    ) -> SignInEvent {
        SignInEvent {
            id,
            at,
            user_id: Some(format!("id-{user}")),
            username: user.into(),
            application: None,
            source_ip: Some(ip.parse().unwrap()),
            location: None,
            success,
            reason: reason.map(str::to_owned),
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn push(at: i64, user: &str, reason: Option<&str>) -> SignInEvent {
        ev(0, at, user, "10.0.0.1", reason.is_none(), reason, &["push"])
    }

    fn fail(at: i64, user: &str, ip: &str) -> SignInEvent {
        ev(0, at, user, ip, false, Some("invalid_credentials"), &["password"])
    }

    #[test]
    fn push_fatigue_thresholds_are_exact() {
        let t = Thresholds::default();
        // 4 timeouts-free prompts: below 5 prompts, 2 denials below 3.
        let mut e = vec![
            push(NOW - 10, "ann", Some("push_denied")),
            push(NOW - 20, "ann", Some("push_denied")),
            push(NOW - 30, "ann", Some("push_suspended")),
            push(NOW - 40, "ann", Some("push_suspended")),
        ];
        assert!(push_fatigue(&e, NOW, &t).is_empty());
        // A fifth prompt: raised.
        e.push(push(NOW - 50, "ann", Some("push_suspended")));
        let d = push_fatigue(&e, NOW, &t);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].kind, d[0].severity, d[0].target.as_str()),
            (DetectionKind::PushFatigue, Severity::High, "user:ann")
        );
        assert_eq!(d[0].details["prompts"], 5);
        // Outside the window does not count.
        let old: Vec<_> = e
            .iter()
            .map(|x| SignInEvent {
                at: NOW - 600,
                ..x.clone()
            })
            .collect();
        assert!(push_fatigue(&old, NOW, &t).is_empty());
        // Three denials alone raise it; three timeouts alone too.
        let den = vec![
            push(NOW - 1, "bo", Some("push_denied")),
            push(NOW - 2, "bo", Some("push_reported")),
            push(NOW - 3, "bo", Some("push_wrong_number")),
        ];
        assert_eq!(push_fatigue(&den, NOW, &t).len(), 1);
        let to = vec![
            push(NOW - 1, "cy", Some("push_timeout")),
            push(NOW - 2, "cy", Some("push_timeout")),
        ];
        assert!(push_fatigue(&to, NOW, &t).is_empty());
        let mut to3 = to.clone();
        to3.push(push(NOW - 3, "cy", Some("push_timeout")));
        assert_eq!(push_fatigue(&to3, NOW, &t).len(), 1);
        // Approval after failures: the user gave in.
        let gave_in = vec![
            push(NOW - 30, "di", Some("push_denied")),
            push(NOW - 20, "di", Some("push_denied")),
            push(NOW - 10, "di", Some("push_denied")),
            push(NOW - 5, "di", None),
        ];
        assert_eq!(push_fatigue(&gave_in, NOW, &t)[0].severity, Severity::Critical);
        // Non-push failures are not prompts.
        let pw: Vec<_> = (0..10).map(|i| fail(NOW - i, "ed", "10.0.0.9")).collect();
        assert!(push_fatigue(&pw, NOW, &t).is_empty());
    }

    #[test]
    fn password_spray_counts_distinct_users_per_source() {
        let t = Thresholds::default();
        let mut e: Vec<_> = (0..9).map(|i| fail(NOW - i, &format!("u{i}"), "203.0.113.7")).collect();
        // Repeats of one user do not make a spray.
        e.extend((0..20).map(|i| fail(NOW - i, "u0", "203.0.113.7")));
        // Other sources don't add up.
        e.push(fail(NOW, "u9", "203.0.113.8"));
        assert!(password_spray(&e, NOW, &t).is_empty());
        e.push(fail(NOW, "u9", "203.0.113.7"));
        let d = password_spray(&e, NOW, &t);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].target, "ip:203.0.113.7");
        assert_eq!(d[0].details["users"], 10);
        // Wrong codes are not password failures.
        let codes: Vec<_> = (0..12)
            .map(|i| {
                ev(
                    0,
                    NOW,
                    &format!("u{i}"),
                    "203.0.113.9",
                    false,
                    Some("invalid_code"),
                    &["totp"],
                )
            })
            .collect();
        assert!(password_spray(&codes, NOW, &t).is_empty());
        // The window is an hour.
        let old: Vec<_> = (0..12)
            .map(|i| fail(NOW - 3600, &format!("u{i}"), "203.0.113.10"))
            .collect();
        assert!(password_spray(&old, NOW, &t).is_empty());
    }

    #[test]
    fn credential_stuffing_needs_volume_ratio_and_spread() {
        let t = Thresholds::default();
        // 50 failures, 25 users, 10 sources, all known users.
        let spread: Vec<_> = (0..50)
            .map(|i| fail(NOW - i, &format!("u{}", i % 25), &format!("198.51.100.{}", i % 10)))
            .collect();
        let d = credential_stuffing(&spread, NOW, &t);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].target, "global");
        // One source, known users: a spray, not stuffing.
        let one: Vec<_> = (0..50)
            .map(|i| fail(NOW - i, &format!("u{}", i % 25), "198.51.100.1"))
            .collect();
        assert!(credential_stuffing(&one, NOW, &t).is_empty());
        // ...unless a third of the names are unknown here.
        let mut unknown = one.clone();
        for e in unknown.iter_mut().take(15) {
            e.user_id = None;
        }
        assert_eq!(credential_stuffing(&unknown, NOW, &t).len(), 1);
        // 49 attempts: below volume.
        assert!(credential_stuffing(&spread[..49], NOW, &t).is_empty());
        // Enough successes drop the failure ratio below 0.9.
        let mut ok = spread.clone();
        ok.extend((0..6).map(|i| ev(0, NOW, &format!("s{i}"), "10.1.1.1", true, None, &["password", "totp"])));
        assert!(credential_stuffing(&ok, NOW, &t).is_empty());
    }

    #[test]
    fn failure_rate_spike_compares_with_baseline() {
        let t = Thresholds::default();
        let app = |mut e: SignInEvent| {
            e.application = Some("crm".into());
            e
        };
        // Baseline: 100 successes an hour ago, 10 failures.
        let mut e: Vec<_> = (0..100)
            .map(|i| app(ev(0, NOW - 3600 - i, "a", "10.0.0.1", true, None, &["password"])))
            .collect();
        e.extend((0..10).map(|i| app(fail(NOW - 3600 - i, "a", "10.0.0.1"))));
        // Recent: 19 failures, 1 success: below 20 failures.
        e.extend((0..19).map(|i| app(fail(NOW - i, "b", "10.0.0.2"))));
        e.push(app(ev(0, NOW, "c", "10.0.0.3", true, None, &["password"])));
        assert!(failure_rate_spike(&e, NOW, &t).is_empty());
        e.push(app(fail(NOW, "b", "10.0.0.2")));
        let d = failure_rate_spike(&e, NOW, &t);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].target, "app:crm");
        // Counting the baseline elsewhere gives the same answer.
        let mut counts = AppCounts::new();
        counts.insert("crm".into(), (10, 110));
        let recent: Vec<_> = e.iter().filter(|x| x.at > NOW - 900).cloned().collect();
        assert_eq!(failure_rate_spike_against(&recent, &counts, NOW, &t), d);
        counts.insert("crm".into(), (300, 310));
        assert!(failure_rate_spike_against(&recent, &counts, NOW, &t).is_empty());
        // A baseline that already fails as often is no spike.
        let mut steady = e.clone();
        steady.extend((0..300).map(|i| app(fail(NOW - 7200 - i, "x", "10.0.0.4"))));
        assert!(failure_rate_spike(&steady, NOW, &t).is_empty());
    }

    #[test]
    fn unusual_location_is_a_never_seen_place() {
        let h = vec![ev(1, NOW - 100, "ann", "192.0.2.10", true, None, &["password"])];
        let same_net = ev(2, NOW, "ann", "192.0.2.99", true, None, &["password"]);
        assert!(unusual_location(&same_net, &h).is_none());
        let other = ev(3, NOW, "ann", "198.51.100.1", true, None, &["password"]);
        let d = unusual_location(&other, &h).unwrap();
        assert_eq!(
            (d.kind, d.target.as_str()),
            (DetectionKind::UnusualLocation, "user:ann")
        );
        // A named location counts as one place whatever the network.
        let mut hl = h.clone();
        hl[0].location = Some("office".into());
        let mut in_office = other.clone();
        in_office.location = Some("office".into());
        assert!(unusual_location(&in_office, &hl).is_none());
        // No history: the first sign-in is the baseline. Failures are not places.
        assert!(unusual_location(&other, &[]).is_none());
        let failed = ev(4, NOW, "ann", "198.51.100.1", false, Some("invalid_credentials"), &[]);
        assert!(unusual_location(&failed, &h).is_none());
    }

    fn geo() -> GeoTable {
        GeoTable::parse_csv(
            "cidr,latitude,longitude,label\n192.0.2.0/24,52.52,13.40,Berlin\n198.51.100.0/24,40.71,-74.01,New York\n198.51.100.128/25,48.85,2.35,Paris\n",
        )
        .unwrap()
    }

    #[test]
    fn impossible_travel_uses_speed_between_ranges() {
        let t = Thresholds::default();
        let g = geo();
        assert_eq!(g.len(), 3);
        // Most specific range wins.
        assert_eq!(g.locate("198.51.100.200".parse().unwrap()).unwrap().label, "Paris");
        let berlin = ev(1, NOW, "ann", "192.0.2.1", true, None, &["password"]);
        let km = distance_km(
            g.locate("192.0.2.1".parse().unwrap()).unwrap(),
            g.locate("198.51.100.1".parse().unwrap()).unwrap(),
        );
        assert!((6350.0..6420.0).contains(&km), "{km}");
        // Berlin → New York in 7 h needs ~910 km/h: impossible; in 7.2 h ~887 km/h: possible.
        let ny = |secs: i64| ev(2, NOW + secs, "ann", "198.51.100.1", true, None, &["password"]);
        let fast = (km / 900.0 * 3600.0) as i64 - 60;
        let slow = (km / 900.0 * 3600.0) as i64 + 60;
        assert!(impossible_travel(&berlin, &ny(fast), &g, &t).is_some());
        assert!(impossible_travel(&berlin, &ny(slow), &g, &t).is_none());
        // Berlin → Paris (~880 km) in 30 minutes: impossible. Unknown ranges: nothing.
        let paris = ev(3, NOW + 1800, "ann", "198.51.100.200", true, None, &["password"]);
        assert_eq!(
            impossible_travel(&berlin, &paris, &g, &t).unwrap().severity,
            Severity::High
        );
        let nowhere = ev(4, NOW + 1, "ann", "203.0.113.1", true, None, &["password"]);
        assert!(impossible_travel(&berlin, &nowhere, &g, &t).is_none());
        assert!(GeoTable::parse_csv("10.0.0.0/8,100,0").is_err());
        assert!(GeoTable::parse_csv("nonsense,1,2").is_err());
    }

    #[test]
    fn posture_exceptions_and_break_glass() {
        let t = Thresholds::default();
        let d = privileged_without_phishing_resistant(&[
            AccountPosture {
                username: "root".into(),
                privileged: true,
                has_phishing_resistant: false,
            },
            AccountPosture {
                username: "keyed".into(),
                privileged: true,
                has_phishing_resistant: true,
            },
            AccountPosture {
                username: "plain".into(),
                privileged: false,
                has_phishing_resistant: false,
            },
        ]);
        assert_eq!(d.iter().map(|d| d.target.as_str()).collect::<Vec<_>>(), ["user:root"]);

        let x = |id: &str, expires_at: i64, revoked: bool| ExceptionFacts {
            id: id.into(),
            policy_id: "p".into(),
            subject: "user:ann".into(),
            approved_by: "user:sec".into(),
            expires_at,
            revoked,
        };
        let week = 7 * 86_400;
        let d = exception_expiry(
            &[
                x("near", NOW + week, false),
                x("far", NOW + week + 1, false),
                x("gone", NOW, false),
                x("long-gone", NOW - week, false),
                x("revoked", NOW + 10, true),
            ],
            NOW,
            &t,
        );
        let got: Vec<_> = d.iter().map(|d| (d.kind, d.target.as_str())).collect();
        assert_eq!(
            got,
            [
                (DetectionKind::ExceptionNearExpiry, "exception:near"),
                (DetectionKind::ExceptionExpired, "exception:gone")
            ]
        );

        let bg = |last: Option<i64>| BreakGlassFacts {
            username: "bg".into(),
            created_at: NOW - 200 * 86_400,
            test_interval_days: 90,
            last_test_at: last,
        };
        assert_eq!(break_glass_test_overdue(&[bg(None)], NOW).len(), 1);
        assert!(break_glass_test_overdue(&[bg(Some(NOW - 90 * 86_400))], NOW).is_empty());
        assert_eq!(
            break_glass_test_overdue(&[bg(Some(NOW - 90 * 86_400 - 1))], NOW).len(),
            1
        );
    }

    #[test]
    fn registration_after_tap_from_a_new_place() {
        let t = Thresholds::default();
        let h = vec![ev(
            1,
            NOW - 86_400,
            "ann",
            "192.0.2.10",
            true,
            None,
            &["password", "totp"],
        )];
        let tap_far = ev(2, NOW, "ann", "203.0.113.5", true, None, &["temporary_access_pass"]);
        let reg = vec![(NOW + 120, "totp".to_string())];
        let d = registration_after_tap(&tap_far, &h, &reg, &t).unwrap();
        assert_eq!(
            (d.kind, d.severity),
            (DetectionKind::RegistrationAfterTap, Severity::High)
        );
        // From a known place, or registration after the window, or no TAP: nothing.
        let tap_home = ev(3, NOW, "ann", "192.0.2.11", true, None, &["temporary_access_pass"]);
        assert!(registration_after_tap(&tap_home, &h, &reg, &t).is_none());
        assert!(registration_after_tap(&tap_far, &h, &[(NOW + 3601, "totp".into())], &t).is_none());
        let pw_far = ev(4, NOW, "ann", "203.0.113.5", true, None, &["password", "totp"]);
        assert!(registration_after_tap(&pw_far, &h, &reg, &t).is_none());
        assert!(registration_after_tap(&tap_far, &[], &reg, &t).is_none());
    }

    #[test]
    fn baseline_replays_a_log_in_order() {
        let t = Thresholds::default();
        let g = geo();
        let mut b = PlaceBaseline::default();
        assert!(b
            .observe(&ev(1, NOW, "ann", "192.0.2.1", true, None, &[]), &g, &t)
            .is_empty());
        assert!(b
            .observe(&ev(2, NOW + 60, "ann", "192.0.2.2", true, None, &[]), &g, &t)
            .is_empty());
        let kinds: Vec<_> = b
            .observe(&ev(3, NOW + 120, "ann", "198.51.100.1", true, None, &[]), &g, &t)
            .into_iter()
            .map(|d| d.kind)
            .collect();
        assert_eq!(kinds, [DetectionKind::UnusualLocation, DetectionKind::ImpossibleTravel]);
    }

    #[test]
    fn risk_levels_from_signals() {
        use DetectionKind::*;
        let r = |unusual, travel, kinds: &[DetectionKind]| {
            sign_in_risk(&RiskSignals {
                unusual_location: unusual,
                impossible_travel: travel,
                alert_kinds: kinds.to_vec(),
            })
        };
        assert_eq!(r(false, false, &[]), RiskLevel::None);
        assert_eq!(r(false, false, &[FailureRateSpike]), RiskLevel::Low);
        assert_eq!(r(true, false, &[]), RiskLevel::Medium);
        assert_eq!(r(false, false, &[PushFatigue]), RiskLevel::Medium);
        assert_eq!(r(true, false, &[PasswordSpray]), RiskLevel::High);
        assert_eq!(r(false, true, &[]), RiskLevel::High);
        assert_eq!(r(false, false, &[ExceptionNearExpiry]), RiskLevel::None);
    }
}
