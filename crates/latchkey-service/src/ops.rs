//! Operations (issue 8) in the service layer: the sign-in log (recording with
//! location, device, methods tried, risk; query; retention), per-user
//! timelines from the audit chain, the detection engine that turns
//! `latchkey_core::detect` findings into deduplicated alerts, sign-in risk for
//! conditional access, and alert handling.
//!
//! The engine runs from two places: a task woken after every logged sign-in
//! (per-sign-in detections over rows it has not seen, by id) and the
//! housekeeping tick (windowed and account-level detections, retention).
//! Both go through [`App::run_detections`], which tests call directly.

use std::net::IpAddr;
use std::sync::Arc;

use latchkey_core::detect::{
    self, AccountPosture, BreakGlassFacts, Detection, DetectionKind, ExceptionFacts, GeoTable, RiskSignals,
    SignInEvent, Thresholds,
};
use latchkey_core::policy::{Decision, ExceptionSubject, RiskLevel};
use latchkey_core::{MethodKind, MethodState, Role, UserState};
use latchkey_store::{AlertRecord, AuditEntry, SignInDetail, SignInFilter, SignInLogEntry, SignInRecord, UserRecord};
use serde::Serialize;
use serde_json::json;

use crate::app::{App, Principal, SignInContext};
use crate::error::{ServiceError, ServiceResult};
use crate::policy::CachedPolicies;

/// Operations settings (serve flags).
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// Sign-in log rows older than this are purged (the purge is audited).
    pub signin_retention_days: i64,
    pub thresholds: Thresholds,
    /// Geolocated IP ranges for impossible travel (empty: no travel checks).
    pub geo: Arc<GeoTable>,
    /// Alert sinks.
    pub webhook_url: Option<String>,
    pub syslog_addr: Option<String>,
    /// How often windowed and account-level detections run (seconds).
    pub detection_interval_secs: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            signin_retention_days: 90,
            thresholds: Thresholds::default(),
            geo: Arc::new(GeoTable::default()),
            webhook_url: None,
            syslog_addr: None,
            detection_interval_secs: 60,
        }
    }
}

/// Per-process engine state: the queue from logged sign-ins to the
/// detection task.
#[derive(Debug)]
pub struct OpsState {
    queue: tokio::sync::mpsc::Sender<u64>,
    /// Taken by the detection task when it starts; until then (tests, CLI
    /// commands) nothing is queued: detections run when called, and the
    /// durable cursor keeps their place either way.
    receiver: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<u64>>>,
    running: std::sync::atomic::AtomicBool,
    /// Failed sign-ins queued so far (each queued with its number), and the
    /// highest number the detection task has examined.
    failures_queued: std::sync::atomic::AtomicU64,
    failures_examined: tokio::sync::watch::Sender<u64>,
}

/// Logged sign-ins waiting for the detection task; a full queue makes the
/// next sign-in wait (back-pressure) rather than drop anything.
const QUEUE_CAPACITY: usize = 1024;
/// The longest a sign-in's risk waits for detections over earlier failures.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Default for OpsState {
    fn default() -> Self {
        let (queue, receiver) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
        Self {
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
            running: Default::default(),
            failures_queued: Default::default(),
            failures_examined: tokio::sync::watch::channel(0).0,
        }
    }
}

impl OpsState {
    /// Queue a logged sign-in for the detection task (a no-op while no task
    /// runs). Waits while the queue is full.
    async fn enqueue(&self, failure: bool) {
        use std::sync::atomic::Ordering;
        if !self.running.load(Ordering::Acquire) {
            return;
        }
        // Numbered after the row committed, so examining number n means
        // every failure numbered up to n was in the log.
        let n = if failure {
            self.failures_queued.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            0
        };
        if self.queue.send(n).await.is_err() {
            tracing::warn!("the detection task has stopped; sign-ins are examined on the next sweep");
        }
    }

    /// Wait (bounded) until the detection task has examined every failed
    /// sign-in queued before now, so risk sees a spray that just happened.
    /// Successes need no wait: their risk (place, travel) is computed live.
    pub(crate) async fn caught_up(&self) {
        use std::sync::atomic::Ordering;
        if !self.running.load(Ordering::Acquire) {
            return;
        }
        let target = self.failures_queued.load(Ordering::Acquire);
        let mut rx = self.failures_examined.subscribe();
        if *rx.borrow() >= target {
            return;
        }
        if tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|n| *n >= target))
            .await
            .is_err()
        {
            tracing::warn!("detections are behind; computing sign-in risk without the newest failures");
        }
    }

    fn take_receiver(&self) -> Option<tokio::sync::mpsc::Receiver<u64>> {
        let rx = self.receiver.lock().expect("ops queue lock").take();
        if rx.is_some() {
            self.running.store(true, std::sync::atomic::Ordering::Release);
        }
        rx
    }
}

/// A sign-in row written inside a step's transaction, for after it commits.
#[derive(Debug)]
pub(crate) struct LoggedSignIn {
    result: String,
    methods: Vec<String>,
}

/// Cursor of the per-sign-in detections (last sign-in id examined).
const SIGNIN_CURSOR: &str = "detect.signins";
/// Kinds about standing conditions: raised again only after the previous
/// alert was resolved (and the dedup window passed), not every window.
const STANDING: [DetectionKind; 4] = [
    DetectionKind::PrivilegedWithoutPhishingResistant,
    DetectionKind::ExceptionNearExpiry,
    DetectionKind::ExceptionExpired,
    DetectionKind::BreakGlassTestOverdue,
];

/// A page of the sign-in log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SignInPage {
    #[schema(value_type = Vec<Object>)]
    pub signins: Vec<SignInRecord>,
    /// Pass as `cursor` for the next (older) page; absent when this page was
    /// not full (a full last page is followed by an empty one).
    pub next_cursor: Option<i64>,
}

/// One entry of a user's timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// method | tap | exception | policy | session | account
    pub category: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Run summary of the engine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectionRun {
    pub signins_examined: usize,
    pub raised: Vec<AlertRecord>,
}

pub(crate) fn require_ops_read(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::Auditor) || p.has_role(Role::SecurityAdmin) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "the sign-in log and alerts need the admin, security_admin or auditor role".into(),
        ))
    }
}

fn require_alert_handler(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::SecurityAdmin) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "handling alerts needs the security_admin or admin role".into(),
        ))
    }
}

fn parse_ip(ip: Option<&str>) -> Option<IpAddr> {
    ip.and_then(|i| i.trim().parse().ok())
}

pub(crate) fn event(r: &SignInRecord) -> SignInEvent {
    let mut methods = r.methods_tried.clone();
    for m in &r.methods_used {
        if !methods.contains(m) {
            methods.push(m.clone());
        }
    }
    SignInEvent {
        id: r.id,
        at: r.at,
        user_id: r.user_id.clone(),
        username: r.username.clone(),
        application: r.application.clone(),
        source_ip: parse_ip(r.source_ip.as_deref()),
        location: r.location.clone(),
        success: r.result == "success",
        reason: r.reason.clone(),
        methods,
    }
}

fn timeline_category(action: &str) -> &'static str {
    match action {
        a if a.starts_with("method.") || a.starts_with("webauthn.") || a.starts_with("device.") => "method",
        a if a.starts_with("tap.") => "tap",
        a if a.starts_with("policy_exception.") => "exception",
        a if a.starts_with("policy")
            || a.starts_with("strength.")
            || a.starts_with("named_location.")
            || a.starts_with("rollout.") =>
        {
            "policy"
        }
        a if a.starts_with("session.") => "session",
        a if a.starts_with("alert.") => "alert",
        _ => "account",
    }
}

fn risk_str(r: RiskLevel) -> &'static str {
    match r {
        RiskLevel::None => "none",
        RiskLevel::Low => "low",
        RiskLevel::Medium => "medium",
        RiskLevel::High => "high",
    }
}

impl App {
    // ---- the sign-in log -----------------------------------------------

    /// The named location an address falls in, from the policy set.
    pub(crate) async fn named_location(&self, ip: Option<&str>) -> ServiceResult<Option<String>> {
        let Some(ip) = parse_ip(ip) else { return Ok(None) };
        Ok(self.policies_now().await?.named_location_of(ip))
    }

    /// Log one sign-in attempt with everything the log keeps; `tried` are
    /// the methods attempted, `decision` the conditional-access decision
    /// (its presence means the first factor passed, so risk is computed).
    pub(crate) async fn record_signin(
        &self,
        e: SignInLogEntry,
        ctx: &SignInContext,
        tried: &[&str],
        decision: Option<&Decision>,
    ) -> ServiceResult<()> {
        let c = self.policies_now().await?;
        let risk = match (&e.user_id, decision) {
            (Some(uid), Some(_)) => match self.store.user_by_id(uid).await? {
                Some(u) => Some(self.signin_risk_with(&c, &u, ctx).await?.0),
                None => None,
            },
            _ => None,
        };
        let mut tx = self.store.bookkeeping().await?;
        let logged = self.log_signin_in(&mut tx, &c, e, ctx, tried, decision, risk).await?;
        tx.commit_bookkeeping().await?;
        self.signin_logged(logged).await;
        Ok(())
    }

    /// Write a sign-in log row inside `tx`, with the risk the step computed.
    /// Call [`App::signin_logged`] once `tx` committed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn log_signin_in(
        &self,
        tx: &mut latchkey_store::WriteTx,
        c: &CachedPolicies,
        e: SignInLogEntry,
        ctx: &SignInContext,
        tried: &[&str],
        decision: Option<&Decision>,
        risk: Option<RiskLevel>,
    ) -> ServiceResult<LoggedSignIn> {
        let detail = SignInDetail {
            location: parse_ip(e.source_ip.as_deref()).and_then(|ip| c.named_location_of(ip)),
            device_id: ctx.device_id().map(str::to_owned),
            unproven_device_id: ctx.unproven_device_id.clone(),
            methods_tried: tried.iter().map(|m| (*m).to_owned()).collect(),
            risk: risk.map(|r| risk_str(r).to_owned()),
        };
        tx.log_signin_detailed(&e, &detail, decision.map(crate::policy::decision_log).as_ref())
            .await?;
        let methods = if e.methods.is_empty() {
            detail.methods_tried
        } else {
            e.methods
        };
        Ok(LoggedSignIn {
            result: e.result,
            methods,
        })
    }

    /// After a logged sign-in committed: metrics, and the detection queue.
    pub(crate) async fn signin_logged(&self, logged: LoggedSignIn) {
        crate::metrics::signin(&logged.result, &logged.methods);
        self.ops.enqueue(logged.result != "success").await;
    }

    /// `GET /signins`: newest first, filtered, paged by id.
    pub async fn list_signins(&self, p: &Principal, mut f: SignInFilter) -> ServiceResult<SignInPage> {
        require_ops_read(p)?;
        if let Some(r) = &f.result {
            if !["success", "failure"].contains(&r.as_str()) {
                return Err(ServiceError::InvalidRequest(
                    "result must be 'success' or 'failure'".into(),
                ));
            }
        }
        if let (Some(a), Some(b)) = (f.from, f.to) {
            if a > b {
                return Err(ServiceError::InvalidRequest("'from' must not be after 'to'".into()));
            }
        }
        if f.limit == 0 {
            f.limit = 100;
        }
        if !(1..=1000).contains(&f.limit) {
            return Err(ServiceError::InvalidRequest("limit must be 1-1000".into()));
        }
        let signins = self.store.signins_query(&f).await?;
        let next_cursor = (signins.len() as i64 == f.limit)
            .then(|| signins.last().map(|s| s.id))
            .flatten();
        Ok(SignInPage { signins, next_cursor })
    }

    /// Delete sign-in log rows past retention, auditing the purge (count and
    /// cutoff) in the same transaction. Returns how many went.
    pub async fn purge_signin_log(&self) -> ServiceResult<u64> {
        let cutoff = self.now() - self.config.ops.signin_retention_days * 86_400;
        let mut tx = self.store.write().await?;
        let n = tx.purge_signins_before(cutoff).await?;
        if n == 0 {
            return Ok(0); // nothing changed: roll back, no audit noise every minute
        }
        tx.audit(
            &AuditEntry::new(
                "system",
                "signins.purge",
                "signins",
                json!({ "count": n, "cutoff": cutoff, "retention_days": self.config.ops.signin_retention_days }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    // ---- timeline ------------------------------------------------------

    /// What changed for one user: methods, passes, exceptions (theirs or
    /// their groups'), policy changes, sessions, alerts about them.
    pub async fn user_timeline(&self, p: &Principal, username: &str, limit: i64) -> ServiceResult<Vec<TimelineEntry>> {
        if !(p.has_role(Role::Helpdesk) || p.has_role(Role::Auditor) || p.has_role(Role::SecurityAdmin)) {
            return Err(ServiceError::Forbidden(
                "a user's timeline needs the helpdesk, auditor, security_admin or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        let target = format!("user:{}", user.username);
        let mut mine_exceptions: Vec<String> = vec![];
        let mut out = vec![];
        let mut after = 0;
        loop {
            let page = self.store.audit_timeline(&target, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                let details: serde_json::Value = serde_json::from_str(&r.details).unwrap_or(json!({}));
                let keep = if r.target == target {
                    true
                } else if r.action == "policy_exception.create" {
                    let subject: Option<ExceptionSubject> = serde_json::from_value(details["subject"].clone()).ok();
                    let about_me = match subject {
                        Some(ExceptionSubject::User(u)) => u == user.username,
                        Some(ExceptionSubject::Group(g)) => user.groups.contains(&g),
                        None => false,
                    };
                    if about_me {
                        if let Some(id) = details["exception_id"].as_str() {
                            mine_exceptions.push(format!("exception:{id}"));
                        }
                    }
                    about_me
                } else if r.action == "policy_exception.revoke" {
                    mine_exceptions.contains(&r.target)
                } else {
                    // Policy, strength, location and rollout changes can
                    // change what this user must prove.
                    r.action.starts_with("policy")
                        || r.action.starts_with("strength.")
                        || r.action.starts_with("named_location.")
                        || r.action.starts_with("rollout.")
                };
                if keep {
                    out.push(TimelineEntry {
                        seq: r.seq,
                        at_ms: r.at_ms,
                        category: timeline_category(&r.action).into(),
                        actor: r.actor,
                        action: r.action,
                        target: r.target,
                        details,
                    });
                }
            }
        }
        // Newest last, at most `limit` of the newest.
        let skip = out.len().saturating_sub(limit.clamp(1, 10_000) as usize);
        Ok(out.split_off(skip))
    }

    // ---- risk ----------------------------------------------------------

    /// Sign-in risk from detections about this user or this source: recent
    /// unresolved alerts, plus whether this sign-in's place is new for the
    /// user or impossibly far from the last one.
    pub async fn signin_risk(&self, user: &UserRecord, ctx: &SignInContext) -> ServiceResult<(RiskLevel, RiskSignals)> {
        let c = self.policies_now().await?;
        self.signin_risk_with(&c, user, ctx).await
    }

    /// [`App::signin_risk`] under policies the caller already holds: one read.
    pub(crate) async fn signin_risk_with(
        &self,
        c: &CachedPolicies,
        user: &UserRecord,
        ctx: &SignInContext,
    ) -> ServiceResult<(RiskLevel, RiskSignals)> {
        self.ops.caught_up().await;
        let t = &self.config.ops.thresholds;
        let now = self.now();
        let since = now - t.spray_window_secs.max(t.push_window_secs);
        let ip = parse_ip(ctx.source_ip.as_deref());
        let mut targets = vec![format!("user:{}", user.username), "global".to_owned()];
        if let Some(ip) = ip {
            targets.push(format!("ip:{ip}"));
        }
        let (kinds, history) = self.store.risk_facts(&targets, since, &user.id, 200).await?;
        let mut signals = RiskSignals::default();
        for k in kinds {
            if let Ok(k) = serde_json::from_value::<DetectionKind>(json!(k)) {
                signals.alert_kinds.push(k);
            }
        }
        let history: Vec<SignInEvent> = history.iter().map(event).collect();
        let current = SignInEvent {
            id: 0,
            at: now,
            user_id: Some(user.id.clone()),
            username: user.username.clone(),
            application: ctx.application.clone(),
            source_ip: ip,
            location: ip.and_then(|ip| c.named_location_of(ip)),
            success: true,
            reason: None,
            methods: vec![],
        };
        signals.unusual_location = detect::unusual_location(&current, &history).is_some();
        if let Some(prev) = history.first() {
            signals.impossible_travel = detect::impossible_travel(prev, &current, &self.config.ops.geo, t).is_some();
        }
        Ok((detect::sign_in_risk(&signals), signals))
    }

    // ---- the detection engine ------------------------------------------

    /// Run every detection that is due: per-sign-in ones over sign-ins not
    /// examined yet, windowed and account-level ones over the current state.
    pub async fn run_detections(&self) -> ServiceResult<DetectionRun> {
        self.run_detections_scoped(true).await
    }

    /// What a new sign-in can change: per-sign-in and windowed detections,
    /// not the account-level sweep (that runs on the tick).
    pub async fn run_signin_detections(&self) -> ServiceResult<DetectionRun> {
        self.run_detections_scoped(false).await
    }

    async fn run_detections_scoped(&self, accounts: bool) -> ServiceResult<DetectionRun> {
        let mut run = self.detect_new_signins().await?;
        let now = self.now();
        let t = self.config.ops.thresholds.clone();
        // Whole rows for the short windows; the day-long failure-spike
        // baseline as counts from the database.
        let events: Vec<SignInEvent> = self
            .store
            .signins_between(now - t.short_lookback_secs(), now + 1, 500_000)
            .await?
            .iter()
            .map(event)
            .collect();
        let baseline: detect::AppCounts = self
            .store
            .signin_counts_by_app(
                now - t.spike_baseline_secs + 1,
                now - t.spike_window_secs + 1,
                latchkey_core::policy::PORTAL_APPLICATION,
            )
            .await?
            .into_iter()
            .map(|(app, f, n)| (app, (f.max(0) as usize, n.max(0) as usize)))
            .collect();
        let mut found = detect::windowed_against(&events, &baseline, now, &t);
        found.extend(self.registration_after_tap(&events, &t).await?);
        if accounts {
            found.extend(self.account_detections(now, &t).await?);
        }
        run.raised.extend(self.raise(found, &t).await?);
        Ok(run)
    }

    /// Per-sign-in detections over rows past the cursor (a batch at a time).
    async fn detect_new_signins(&self) -> ServiceResult<DetectionRun> {
        let t = self.config.ops.thresholds.clone();
        let mut run = DetectionRun::default();
        loop {
            let cursor = self.store.cursor(SIGNIN_CURSOR).await?;
            let rows = self.store.signins_after(cursor.unwrap_or(0), 1000).await?;
            let Some(last) = rows.last().map(|r| r.id) else { break };
            let mut found = vec![];
            let now = self.now();
            // Rows older than the lookback (a first run over an old log)
            // would only raise stale alerts.
            for r in rows
                .iter()
                .filter(|r| r.result == "success" && r.user_id.is_some() && r.at > now - t.lookback_secs())
            {
                let ev = event(r);
                let history: Vec<SignInEvent> = self
                    .store
                    .user_success_history(r.user_id.as_deref().unwrap_or_default(), r.id, 200)
                    .await?
                    .iter()
                    .map(event)
                    .collect();
                found.extend(detect::unusual_location(&ev, &history));
                if let Some(prev) = history.first() {
                    found.extend(detect::impossible_travel(prev, &ev, &self.config.ops.geo, &t));
                }
            }
            // Another node that examined these rows first wins; ours are dropped.
            if !self.store.advance_cursor(SIGNIN_CURSOR, cursor, last).await? {
                break;
            }
            run.signins_examined += rows.len();
            run.raised.extend(self.raise(found, &t).await?);
        }
        Ok(run)
    }

    async fn registration_after_tap(&self, events: &[SignInEvent], t: &Thresholds) -> ServiceResult<Vec<Detection>> {
        let mut out = vec![];
        let now = self.now();
        for ev in events.iter().filter(|e| {
            e.success
                && e.at > now - t.tap_registration_window_secs
                && e.methods.iter().any(|m| m == "temporary_access_pass")
        }) {
            let Some(uid) = &ev.user_id else { continue };
            let history: Vec<SignInEvent> = self
                .store
                .user_success_history(uid, ev.id, 200)
                .await?
                .iter()
                .map(event)
                .collect();
            if detect::unusual_location(ev, &history).is_none() {
                continue;
            }
            let target = format!("user:{}", ev.username);
            let registrations: Vec<(i64, String)> = self
                .store
                .audit_page(0, 1000, Some(&target))
                .await?
                .events
                .into_iter()
                .filter(|r| r.action == "method.add" || r.action == "webauthn.register")
                .map(|r| {
                    let d: serde_json::Value = serde_json::from_str(&r.details).unwrap_or(json!({}));
                    (r.at_ms / 1000, d["kind"].as_str().unwrap_or("method").to_owned())
                })
                .collect();
            out.extend(detect::registration_after_tap(ev, &history, &registrations, t));
        }
        Ok(out)
    }

    async fn account_detections(&self, now: i64, t: &Thresholds) -> ServiceResult<Vec<Detection>> {
        let mut postures = vec![];
        for u in self.store.list_users().await? {
            if u.state != UserState::Active || !u.privileged() {
                continue;
            }
            let has_pr = self
                .store
                .methods_for_user(&u.id)
                .await?
                .iter()
                .any(|m| m.kind == MethodKind::Webauthn && m.state == MethodState::Active);
            postures.push(AccountPosture {
                username: u.username.clone(),
                privileged: true,
                has_phishing_resistant: has_pr,
            });
        }
        let mut out = detect::privileged_without_phishing_resistant(&postures);
        let exceptions: Vec<ExceptionFacts> = self
            .store
            .exceptions()
            .await?
            .into_iter()
            .map(|x| ExceptionFacts {
                subject: match &x.subject {
                    ExceptionSubject::User(u) => format!("user:{u}"),
                    ExceptionSubject::Group(g) => format!("group:{g}"),
                },
                id: x.id,
                policy_id: x.policy_id,
                approved_by: x.approved_by,
                expires_at: x.expires_at,
                revoked: x.revoked_at.is_some(),
            })
            .collect();
        out.extend(detect::exception_expiry(&exceptions, now, t));
        let bg: Vec<BreakGlassFacts> = self
            .store
            .break_glass_accounts()
            .await?
            .into_iter()
            .map(|b| BreakGlassFacts {
                username: b.username,
                created_at: b.created_at,
                test_interval_days: b.test_interval_days,
                last_test_at: b.last_test_at,
            })
            .collect();
        out.extend(detect::break_glass_test_overdue(&bg, now));
        Ok(out)
    }

    /// Store detections as alerts, each with its audit event, skipping those
    /// already raised (same kind and target) within the dedup window, or
    /// still unresolved for standing conditions.
    async fn raise(&self, found: Vec<Detection>, t: &Thresholds) -> ServiceResult<Vec<AlertRecord>> {
        if found.is_empty() {
            return Ok(vec![]);
        }
        let now = self.now();
        let mut tx = self.store.write().await?;
        let mut raised = vec![];
        for d in found {
            let kind = d.kind.as_str();
            let standing = STANDING.contains(&d.kind);
            if tx.alert_raised_since(kind, &d.target, now - t.dedup_secs).await?
                || (standing && tx.alert_unresolved(kind, &d.target).await?)
            {
                continue;
            }
            let severity = d.severity.as_str();
            tx.insert_alert(kind, severity, &d.target, &d.details, now).await?;
            tx.audit(
                &AuditEntry::new(
                    "system:detections",
                    "alert.raise",
                    d.target.clone(),
                    json!({ "kind": kind, "severity": severity, "details": d.details }),
                ),
                self.clock.now_ms(),
            )
            .await?;
            raised.push((kind.to_owned(), severity.to_owned(), d.target.clone()));
        }
        if raised.is_empty() {
            return Ok(vec![]); // all deduplicated: nothing written, roll back
        }
        tx.commit().await?;
        let mut out = vec![];
        for (kind, severity, target) in raised {
            tracing::warn!(kind = %kind, severity = %severity, target = %target, "alert raised");
            crate::metrics::alert_raised(&kind, &severity);
            out.extend(
                self.store
                    .unresolved_alerts_for(&target, now)
                    .await?
                    .into_iter()
                    .filter(|a| a.kind == kind),
            );
        }
        Ok(out)
    }

    // ---- alerts --------------------------------------------------------

    pub async fn list_alerts(
        &self,
        p: &Principal,
        status: Option<&str>,
        limit: i64,
    ) -> ServiceResult<Vec<AlertRecord>> {
        require_ops_read(p)?;
        if let Some(s) = status {
            if !["open", "acknowledged", "resolved"].contains(&s) {
                return Err(ServiceError::InvalidRequest(
                    "status must be open, acknowledged or resolved".into(),
                ));
            }
        }
        Ok(self.store.alerts_newest(status, limit).await?)
    }

    /// Acknowledge (someone is on it) or resolve (with what was done) an alert.
    pub async fn handle_alert(
        &self,
        p: &Principal,
        id: i64,
        resolve: bool,
        resolution: Option<&str>,
    ) -> ServiceResult<AlertRecord> {
        require_alert_handler(p)?;
        let resolution = resolution.map(str::trim).filter(|r| !r.is_empty());
        if let Some(r) = resolution {
            if r.chars().count() > 1000 || r.chars().any(|c| c.is_control() && c != '\n') {
                return Err(ServiceError::InvalidRequest(
                    "resolution must be at most 1000 printable characters".into(),
                ));
            }
        }
        if resolve && resolution.is_none() {
            return Err(ServiceError::InvalidRequest(
                "resolving an alert needs a resolution".into(),
            ));
        }
        let status = if resolve { "resolved" } else { "acknowledged" };
        let mut tx = self.store.write().await?;
        if !tx.handle_alert(id, status, &p.actor(), resolution, self.now()).await? {
            return Err(match self.store.alert(id).await? {
                Some(_) => ServiceError::InvalidState("this alert is already resolved".into()),
                None => ServiceError::NotFound(format!("alert {id}")),
            });
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                if resolve { "alert.resolve" } else { "alert.acknowledge" },
                format!("alert:{id}"),
                json!({ "resolution": resolution }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.store
            .alert(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("alert {id}")))
    }

    /// Alert counts for `/metrics`.
    pub async fn metrics_text(&self) -> ServiceResult<String> {
        Ok(crate::metrics::render(&self.store.alert_counts().await?))
    }
}

/// Background work of operations: detections woken by sign-ins and on a
/// tick, retention with the housekeeping tick, and alert delivery. Dropping
/// the returned set (the housekeeping task ending) stops them all.
pub(crate) fn spawn_tasks(app: Arc<App>) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let a = app.clone();
    let queue = app.ops.take_receiver();
    set.spawn(async move {
        let every = std::time::Duration::from_secs(a.config.ops.detection_interval_secs.max(1));
        let mut next_sweep = tokio::time::Instant::now();
        let Some(mut queue) = queue else {
            tracing::warn!("another detection task holds the sign-in queue");
            return;
        };
        loop {
            // Whichever comes first: logged sign-ins or the next sweep.
            let first = tokio::select! {
                n = queue.recv() => match n {
                    Some(n) => Some(n),
                    None => return,
                },
                _ = tokio::time::sleep_until(next_sweep) => None,
            };
            let r = match first {
                Some(n) => {
                    // Everything queued meanwhile is examined together.
                    let mut highest = n;
                    while let Ok(n) = queue.try_recv() {
                        highest = highest.max(n);
                    }
                    let r = a.run_signin_detections().await;
                    a.ops.failures_examined.send_if_modified(|seen| {
                        let moved = highest > *seen;
                        *seen = (*seen).max(highest);
                        moved
                    });
                    r
                }
                None => {
                    next_sweep = tokio::time::Instant::now() + every;
                    a.run_detections().await
                }
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "detections failed");
            }
        }
    });
    if app.config.ops.webhook_url.is_some() || app.config.ops.syslog_addr.is_some() {
        set.spawn(crate::ops_sinks::deliver_forever(app.clone()));
    }
    set
}

/// Retention, run from the housekeeping tick.
pub(crate) async fn housekeeping(app: &App) {
    match app.purge_signin_log().await {
        Ok(n) if n > 0 => tracing::info!(count = n, "purged sign-in log rows past retention"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging the sign-in log failed"),
    }
}

/// Purge expired flows and sessions every minute (abort the handle to stop).
pub fn spawn_housekeeping(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ops_tasks = spawn_tasks(app.clone());
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            housekeeping(&app).await;
            if let Err(e) = app.store.purge_expired(app.now()).await {
                tracing::warn!(error = %e, "purging expired flows and sessions failed");
            }
            if let Err(e) = app.store.purge_radius_challenges(app.now()).await {
                tracing::warn!(error = %e, "purging expired RADIUS challenges failed");
            }
            if let Err(e) = app.release_deleted_usernames().await {
                tracing::warn!(error = %e, "releasing deleted accounts' usernames failed");
            }
        }
    })
}
