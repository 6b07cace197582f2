//! Alert sinks: a webhook (one JSON POST per alert) and syslog (RFC 5424 over
//! UDP, formatted by the `syslog` crate). A background task reads alerts by
//! id past each sink's cursor, so delivery never blocks a sign-in, a slow or
//! failing sink never holds up the other, and with several nodes each alert
//! goes out once (the cursor advances by compare-and-swap). The admin
//! console is the third sink: it reads the alerts table itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use latchkey_store::AlertRecord;
use serde_json::json;

use crate::app::App;
use crate::error::{ServiceError, ServiceResult};

const WEBHOOK_CURSOR: &str = "sink.webhook";
const SYSLOG_CURSOR: &str = "sink.syslog";
/// Private enterprise number 32473 is reserved for documentation (RFC 5612).
const SD_ID: &str = "latchkey@32473";

/// The JSON document a webhook receives.
pub fn webhook_body(a: &AlertRecord) -> serde_json::Value {
    json!({
        "source": "latchkey",
        "id": a.id,
        "at": a.at,
        "kind": a.kind,
        "severity": a.severity,
        "target": a.target,
        "status": a.status,
        "details": a.details,
    })
}

fn syslog_severity(s: &str) -> syslog::Severity {
    match s {
        "critical" => syslog::Severity::LOG_CRIT,
        "high" => syslog::Severity::LOG_ERR,
        "medium" => syslog::Severity::LOG_WARNING,
        _ => syslog::Severity::LOG_NOTICE,
    }
}

fn send_syslog(addr: &str, a: &AlertRecord) -> Result<(), String> {
    let formatter = syslog::Formatter5424 {
        facility: syslog::Facility::LOG_AUTH,
        hostname: None,
        process: "latchkey".into(),
        pid: std::process::id(),
    };
    let server: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("syslog address does not resolve")?;
    let local = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let mut logger = syslog::udp(formatter, local, server).map_err(|e| e.to_string())?;
    let mut params = BTreeMap::new();
    params.insert("id".to_owned(), a.id.to_string());
    params.insert("kind".to_owned(), a.kind.clone());
    params.insert("severity".to_owned(), a.severity.clone());
    params.insert("target".to_owned(), a.target.clone());
    let mut sd = BTreeMap::new();
    sd.insert(SD_ID.to_owned(), params);
    let msg = format!("{} {} {}", a.kind, a.target, a.details);
    let id = u32::try_from(a.id).unwrap_or(u32::MAX);
    let r = match syslog_severity(&a.severity) {
        syslog::Severity::LOG_CRIT => logger.crit((id, sd, msg)),
        syslog::Severity::LOG_ERR => logger.err((id, sd, msg)),
        syslog::Severity::LOG_WARNING => logger.warning((id, sd, msg)),
        _ => logger.notice((id, sd, msg)),
    };
    r.map_err(|e| e.to_string())
}

impl App {
    /// Deliver alerts past each configured sink's cursor. A sink's first run
    /// starts at the newest alert (no flood of history). Returns how many
    /// deliveries were made.
    pub async fn deliver_alerts(&self) -> ServiceResult<usize> {
        let mut delivered = 0;
        if let Some(url) = self.config.ops.webhook_url.clone() {
            let client = crate::http_client().map_err(ServiceError::Internal)?;
            delivered += self
                .deliver_to(WEBHOOK_CURSOR, |a| {
                    let client = client.clone();
                    let url = url.clone();
                    async move {
                        let r = client
                            .post(&url)
                            .json(&webhook_body(&a))
                            .send()
                            .await
                            .map_err(|e| e.without_url().to_string())?;
                        if r.status().is_success() {
                            Ok(())
                        } else {
                            Err(format!("webhook answered {}", r.status()))
                        }
                    }
                })
                .await?;
        }
        if let Some(addr) = self.config.ops.syslog_addr.clone() {
            delivered += self
                .deliver_to(SYSLOG_CURSOR, |a| {
                    let addr = addr.clone();
                    async move {
                        tokio::task::spawn_blocking(move || send_syslog(&addr, &a))
                            .await
                            .map_err(|e| e.to_string())?
                    }
                })
                .await?;
        }
        Ok(delivered)
    }

    async fn deliver_to<F, Fut>(&self, cursor_name: &str, send: F) -> ServiceResult<usize>
    where
        F: Fn(AlertRecord) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let Some(mut cursor) = self.store.cursor(cursor_name).await? else {
            let start = self.store.max_alert_id().await?;
            self.store.advance_cursor(cursor_name, None, start).await?;
            return Ok(0);
        };
        let mut n = 0;
        for a in self.store.alerts(cursor, 100).await? {
            let id = a.id;
            if let Err(e) = send(a).await {
                // Stop here; the next run retries from this alert.
                tracing::warn!(sink = cursor_name, alert = id, error = %e, "alert delivery failed");
                break;
            }
            if !self.store.advance_cursor(cursor_name, Some(cursor), id).await? {
                break; // another node is delivering
            }
            cursor = id;
            n += 1;
        }
        Ok(n)
    }
}

/// Deliver every couple of seconds until the task is dropped.
pub(crate) async fn deliver_forever(app: Arc<App>) {
    loop {
        if let Err(e) = app.deliver_alerts().await {
            tracing::warn!(error = %e, "alert delivery failed");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
