//! The sign-in hot path's statement budget, counted at the driver: sqlx
//! reports every statement it runs as a `tracing` event (target
//! `sqlx::query`), and a subscriber layer installed here counts the ones made
//! inside a marked span. A completing TOTP verify may run at most 12
//! statements, the password step at most 8 (BEGIN and COMMIT not counted, nor the
//! SAVEPOINT and RELEASE that mark a step inside SQLite's group commit).
//! Run on SQLite, and on PostgreSQL when `LATCHKEY_TEST_POSTGRES_URL` is set.

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::http::StatusCode;
use common::{Harness, PASSWORD};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const VERIFY_BUDGET: usize = 12;
const PASSWORD_BUDGET: usize = 8;
const PROBE: &str = "statement_budget_probe";

/// Statements seen per probe span (by the span's `probe` field).
static SEEN: OnceLock<Mutex<HashMap<u64, Vec<String>>>> = OnceLock::new();

fn seen() -> &'static Mutex<HashMap<u64, Vec<String>>> {
    SEEN.get_or_init(Default::default)
}

struct ProbeId(u64);

#[derive(Default)]
struct Fields {
    probe: Option<u64>,
    statement: Option<String>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "probe" {
            self.probe = Some(value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }
}

impl Fields {
    /// sqlx gives a `summary` of every statement and, when the summary is
    /// shortened, the whole text as `db.statement` (else that is empty).
    fn text(&mut self, field: &Field, value: String) {
        let value = value.trim().trim_matches('"').to_owned();
        match field.name() {
            "db.statement" if !value.is_empty() => self.statement = Some(value),
            "summary" if self.statement.is_none() => self.statement = Some(value),
            _ => {}
        }
    }
}

/// Counts `sqlx::query` events whose span scope holds a probe span.
struct StatementCounter;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StatementCounter {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != PROBE {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(n), Some(span)) = (f.probe, ctx.span(id)) {
            span.extensions_mut().insert(ProbeId(n));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else { return };
        let Some(probe) = scope
            .from_root()
            .find_map(|s| s.extensions().get::<ProbeId>().map(|p| p.0))
        else {
            return;
        };
        let mut f = Fields::default();
        event.record(&mut f);
        let sql = f.statement.unwrap_or_default();
        let head = sql.trim_start().to_ascii_uppercase();
        // Transaction control is not work, nor is opening a connection (the
        // pool's `after_connect` settings on SQLite): a running server's pool
        // is open already.
        if head.starts_with("BEGIN")
            || head.starts_with("COMMIT")
            || head.starts_with("PRAGMA")
            || head.starts_with("SAVEPOINT")
            || head.starts_with("RELEASE")
        {
            return;
        }
        seen().lock().unwrap().entry(probe).or_default().push(sql);
    }
}

fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // sqlx logs statements at DEBUG; this subscriber enables everything
        // for the counter only (nothing is printed).
        let subscriber = tracing_subscriber::registry().with(StatementCounter);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this test binary");
    });
}

/// Run `f` inside a fresh probe span; returns its output and the statements
/// it ran (on any thread, e.g. SQLite's worker, that entered the span).
async fn count<T>(f: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let probe = NEXT.fetch_add(1, Ordering::Relaxed);
    let out = f.instrument(tracing::info_span!(PROBE, probe)).await;
    let stmts = seen().lock().unwrap().remove(&probe).unwrap_or_default();
    (out, stmts)
}

#[track_caller]
fn within_budget(what: &str, stmts: &[String], budget: usize, backend: &str) {
    let listing: String = stmts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "  {:>2}. {}\n",
                i + 1,
                s.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    eprintln!("{backend}: {what} ran {} statements:\n{listing}", stmts.len());
    assert!(
        stmts.len() <= budget,
        "{backend}: {what} ran {} SQL statements, over its budget of {budget}:\n{listing}",
        stmts.len()
    );
}

async fn budget_scenario(h: &Harness, backend: &str) {
    install();
    let secret = h.user_with_totp("alice", &[]).await;
    // One sign-in first, so the pool's connections and the policy cache are
    // warm, as on a server that has been running.
    h.advance(30);
    h.signin_mfa("alice", &secret).await;
    h.advance(30);

    let (r, stmts) = count(h.start_with_password("alice", PASSWORD)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required", "{}", r.text());
    assert!(!stmts.is_empty(), "{backend}: the counter saw no statement at all");
    within_budget("the password step", &stmts, PASSWORD_BUDGET, backend);

    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let (r, stmts) = count(h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete", "{}", r.text());
    assert!(r.json["session_token"].is_string());
    within_budget("a completing TOTP verify", &stmts, VERIFY_BUDGET, backend);
}

#[tokio::test]
async fn signin_steps_stay_within_their_statement_budget_sqlite() {
    let h = Harness::sqlite().await;
    budget_scenario(&h, "sqlite").await;
}

#[tokio::test]
async fn signin_steps_stay_within_their_statement_budget_postgres() {
    let Some(h) = Harness::postgres("signin_steps_stay_within_their_statement_budget_postgres").await else {
        return;
    };
    budget_scenario(&h, "postgres").await;
}

/// The counter itself: it sees statements made inside a probe, and only those.
#[tokio::test]
async fn the_counter_counts_what_runs_inside_its_span() {
    install();
    let h = Harness::sqlite().await;
    let (_, stmts) = count(h.app.ready()).await;
    assert_eq!(stmts.len(), 1, "{stmts:?}");
    assert!(stmts[0].contains("SELECT 1"), "{stmts:?}");
    let (_, none) = count(async {}).await;
    assert!(none.is_empty());
}
