//! Prometheus metrics, served at `/metrics`. Counters live for the process
//! (each node exports its own; Prometheus sums them); alert counts are read
//! from the database at scrape time, so every node reports the same totals.
//!
//! Other features record through the small functions here, e.g. the push
//! channel calls [`push_prompt`] for every prompt it sends and
//! [`push_outcome`] for what the user answered.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

struct Metrics {
    registry: Registry,
    signins: IntCounterVec,
    push_prompts: IntCounterVec,
    push_outcomes: IntCounterVec,
    latency: HistogramVec,
    alerts_raised: IntCounterVec,
    alerts: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new_custom(Some("latchkey".into()), None).expect("registry");
    let signins = IntCounterVec::new(
        Opts::new(
            "signins_total",
            "Sign-in attempts logged, by result and method (one per method)",
        ),
        &["result", "method"],
    )
    .expect("metric");
    let push_prompts = IntCounterVec::new(
        Opts::new("push_prompts_total", "Push prompts sent to authenticator devices"),
        &["application"],
    )
    .expect("metric");
    let push_outcomes = IntCounterVec::new(
        Opts::new(
            "push_outcomes_total",
            "Answers to push prompts (approved, denied, timeout, reported...)",
        ),
        &["outcome"],
    )
    .expect("metric");
    let latency = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "Latency of sign-in endpoints")
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        &["route", "status"],
    )
    .expect("metric");
    let alerts_raised = IntCounterVec::new(
        Opts::new("alerts_raised_total", "Alerts raised by this node's detection engine"),
        &["kind", "severity"],
    )
    .expect("metric");
    let alerts = IntGaugeVec::new(
        Opts::new("alerts", "Alerts in the database, by kind, severity and status"),
        &["kind", "severity", "status"],
    )
    .expect("metric");
    for c in [&signins, &push_prompts, &push_outcomes, &alerts_raised] {
        registry.register(Box::new((*c).clone())).expect("unique metric");
    }
    registry.register(Box::new(latency.clone())).expect("unique metric");
    registry.register(Box::new(alerts.clone())).expect("unique metric");
    Metrics {
        registry,
        signins,
        push_prompts,
        push_outcomes,
        latency,
        alerts_raised,
        alerts,
    }
});

/// One logged sign-in attempt.
pub fn signin(result: &str, methods: &[String]) {
    if methods.is_empty() {
        METRICS.signins.with_label_values(&[result, "none"]).inc();
    }
    for m in methods {
        METRICS.signins.with_label_values(&[result, m.as_str()]).inc();
    }
}

/// A push prompt was sent (for the prompt rate: `rate(latchkey_push_prompts_total[5m])`).
pub fn push_prompt(application: &str) {
    METRICS.push_prompts.with_label_values(&[application]).inc();
}

/// What the user did with a push prompt.
pub fn push_outcome(outcome: &str) {
    METRICS.push_outcomes.with_label_values(&[outcome]).inc();
}

pub fn observe_latency(route: &str, status: u16, d: Duration) {
    METRICS
        .latency
        .with_label_values(&[route, &status.to_string()])
        .observe(d.as_secs_f64());
}

pub fn alert_raised(kind: &str, severity: &str) {
    METRICS.alerts_raised.with_label_values(&[kind, severity]).inc();
}

/// The exposition text, with alert counts as given (kind, severity, status, count).
pub fn render(alert_counts: &[(String, String, String, i64)]) -> String {
    METRICS.alerts.reset();
    for (k, s, st, n) in alert_counts {
        METRICS.alerts.with_label_values(&[k, s, st]).set(*n);
    }
    let mut buf = vec![];
    TextEncoder::new()
        .encode(&METRICS.registry.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).expect("exposition is UTF-8")
}
