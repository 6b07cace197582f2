//! SMS and voice codes, a labelled weak backup: phone registration, code
//! delivery through a [`MessageGateway`], and the sign-in check.
//!
//! Gateways: a generic HTTP webhook (fits most SMS/voice providers), SMTP
//! email-to-SMS, and the development `outbox` that appends messages to a file
//! in the data directory (the embedded default; it sends nothing and says so
//! in the log and the UI).

use std::path::PathBuf;

use latchkey_core::sms::{normalize_code, PhoneNumber, SmsPolicy};
use latchkey_core::{MethodKind, MethodState, VerifyMethod};
use latchkey_store::{method_id, new_id, AuditEntry, MethodRecord, NewMethod, SmsCodeRecord, UserRecord};
use rand::rngs::OsRng;
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::app::{clean_label, App, Principal};
use crate::error::{ServiceError, ServiceResult};

/// One message to deliver.
#[derive(Debug, Clone, Serialize)]
pub struct OutgoingMessage {
    /// `sms` or `voice`.
    pub channel: String,
    /// E.164.
    pub to: String,
    pub body: String,
}

/// Something that delivers text or voice messages to a phone number.
pub trait MessageGateway {
    /// For logs and the UI.
    fn describe(&self) -> String;
    /// Whether messages really leave the server.
    fn is_development_only(&self) -> bool {
        false
    }
    fn send(&self, m: &OutgoingMessage) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// The development outbox: one JSON line per message.
#[derive(Debug, Clone)]
pub struct OutboxGateway {
    pub path: PathBuf,
}

impl MessageGateway for OutboxGateway {
    fn describe(&self) -> String {
        format!(
            "development outbox {} (DEVELOPMENT ONLY: nothing is sent)",
            self.path.display()
        )
    }
    fn is_development_only(&self) -> bool {
        true
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let mut line = serde_json::to_string(&json!({
            "channel": m.channel, "to": m.to, "body": m.body, "development_only": true,
            "at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        }))
        .map_err(|e| e.to_string())?;
        line.push('\n');
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        f.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        // tokio's File writes in the background: only a flush says it is done.
        f.flush().await.map_err(|e| e.to_string())?;
        tracing::warn!(path = %self.path.display(), channel = %m.channel, "DEVELOPMENT-ONLY outbox gateway: message written to a file, not sent");
        Ok(())
    }
}

/// A generic HTTP webhook: most SMS and voice providers accept a request
/// whose body is built from a template.
#[derive(Debug, Clone)]
pub struct WebhookGateway {
    pub url: String,
    /// GET, POST or PUT.
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// Placeholders `{to}`, `{message}`, `{channel}`, escaped for the content
    /// type (JSON string contents, or form-encoded).
    pub body_template: String,
    pub content_type: String,
}

impl Default for WebhookGateway {
    fn default() -> Self {
        Self {
            url: String::new(),
            method: "POST".into(),
            headers: vec![],
            body_template: r#"{"to":"{to}","message":"{message}","channel":"{channel}"}"#.into(),
            content_type: "application/json".into(),
        }
    }
}

impl WebhookGateway {
    /// The request body for `m`.
    pub fn render(&self, m: &OutgoingMessage) -> String {
        let escape = |v: &str| -> String {
            if self.content_type.contains("json") {
                let q = serde_json::to_string(v).expect("string serialises");
                q[1..q.len() - 1].to_owned()
            } else if self.content_type.contains("x-www-form-urlencoded") {
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
            } else {
                v.to_owned()
            }
        };
        self.body_template
            .replace("{to}", &escape(&m.to))
            .replace("{message}", &escape(&m.body))
            .replace("{channel}", &escape(&m.channel))
    }
}

impl MessageGateway for WebhookGateway {
    fn describe(&self) -> String {
        let host = url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!("HTTP webhook to {host}")
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<(), String> {
        let method =
            reqwest::Method::from_bytes(self.method.to_ascii_uppercase().as_bytes()).map_err(|e| e.to_string())?;
        let client = crate::http_client()?;
        let mut req = client
            .request(method, &self.url)
            .header(reqwest::header::CONTENT_TYPE, &self.content_type)
            .body(self.render(m));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| {
            // reqwest's message hides the cause (TLS, DNS, refused): name it for the
            // operator, but not the URL (a provider's key may sit in its query).
            let e = e.without_url();
            let mut msg = format!("webhook request failed: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                msg.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            msg
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", resp.status()))
        }
    }
}

/// Email-to-SMS: many carriers and SMS providers turn a mail to
/// `<number>@<their domain>` into a text message. Sent with lettre to an SMTP
/// relay without TLS (meant for a relay on the same host or network, which
/// does TLS onward).
#[derive(Debug, Clone)]
pub struct SmtpGateway {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    /// Recipient; `{number}` is the E.164 number without '+', e.g. `{number}@sms.example.net`.
    pub to_template: String,
    pub subject: String,
}

impl MessageGateway for SmtpGateway {
    fn describe(&self) -> String {
        let domain = self.to_template.rsplit('@').next().unwrap_or_default();
        format!("SMTP email-to-SMS via {}:{} to {domain}", self.host, self.port)
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<(), String> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
        let to = self.to_template.replace("{number}", m.to.trim_start_matches('+'));
        let email = Message::builder()
            .from(self.from.parse().map_err(|e| format!("from address: {e}"))?)
            .to(to.parse().map_err(|e| format!("recipient address: {e}"))?)
            .subject(self.subject.clone())
            .body(m.body.clone())
            .map_err(|e| e.to_string())?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(std::time::Duration::from_secs(10)));
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        b.build()
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// The configured gateway (static dispatch: no trait objects needed).
#[derive(Debug, Clone)]
pub enum GatewayConfig {
    Outbox(OutboxGateway),
    Webhook(WebhookGateway),
    Smtp(SmtpGateway),
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig::Outbox(OutboxGateway {
            path: PathBuf::from("latchkey-data").join("outbox-messages.jsonl"),
        })
    }
}

impl MessageGateway for GatewayConfig {
    fn describe(&self) -> String {
        match self {
            GatewayConfig::Outbox(g) => g.describe(),
            GatewayConfig::Webhook(g) => g.describe(),
            GatewayConfig::Smtp(g) => g.describe(),
        }
    }
    fn is_development_only(&self) -> bool {
        matches!(self, GatewayConfig::Outbox(_))
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<(), String> {
        match self {
            GatewayConfig::Outbox(g) => g.send(m).await,
            GatewayConfig::Webhook(g) => g.send(m).await,
            GatewayConfig::Smtp(g) => g.send(m).await,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub policy: SmsPolicy,
    /// Privileged users may not register or use SMS/voice.
    pub forbid_privileged: bool,
    pub gateway: GatewayConfig,
    /// `{code}` and `{minutes}`.
    pub sms_template: String,
    /// `{code}` (spoken digit by digit) and `{minutes}`.
    pub voice_template: String,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            policy: SmsPolicy::default(),
            forbid_privileged: false,
            gateway: GatewayConfig::default(),
            sms_template: "Your Latchkey code is {code}. It expires in {minutes} minutes. Never share it; Latchkey staff will never ask for it.".into(),
            voice_template: "This is Latchkey. Your code is: {code}. Again: {code}. It expires in {minutes} minutes.".into(),
        }
    }
}

impl SmsConfig {
    /// Whether codes only reach the development outbox.
    pub fn gateway_is_development_only(&self) -> bool {
        matches!(self.gateway, GatewayConfig::Outbox(_))
    }
}

/// Where a code went, as the sign-in screen shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PhoneCodeSent {
    pub channel: String,
    /// The phone number, masked.
    pub to: String,
    pub expires_at: i64,
    /// True when the gateway is the development outbox (nothing was sent).
    pub development_only: bool,
}

fn phone_kind(m: VerifyMethod) -> ServiceResult<MethodKind> {
    match m {
        VerifyMethod::Sms => Ok(MethodKind::Sms),
        VerifyMethod::Voice => Ok(MethodKind::Voice),
        other => Err(ServiceError::InvalidRequest(format!(
            "'{}' is not sms or voice",
            other.as_str()
        ))),
    }
}

impl App {
    /// SMS/voice are removed from a privileged user's second factors when
    /// the admin setting forbids them.
    pub(crate) fn drop_forbidden_phone_methods(&self, user: &UserRecord, out: &mut Vec<VerifyMethod>) {
        if self.config.sms.forbid_privileged && user.privileged() {
            out.retain(|m| !matches!(m, VerifyMethod::Sms | VerifyMethod::Voice));
        }
    }

    fn phone_of(&self, m: &MethodRecord) -> ServiceResult<PhoneNumber> {
        let sealed = m
            .secret_sealed
            .as_deref()
            .ok_or_else(|| ServiceError::Internal("phone method without a number".into()))?;
        let plain = self.keys.open(sealed, &m.id)?;
        let s = std::str::from_utf8(&plain).map_err(|_| ServiceError::Internal("stored phone number".into()))?;
        Ok(PhoneNumber::parse(s)?)
    }

    /// Generate, store (hashed) and deliver a code to the phone of `m`.
    async fn send_phone_code(
        &self,
        user: &UserRecord,
        m: &MethodRecord,
        flow_key: &str,
    ) -> ServiceResult<PhoneCodeSent> {
        let policy = self.config.sms.policy;
        let phone = self.phone_of(m)?;
        let phone_hash = self.hash("phone", phone.as_str());
        let now = self.now();
        let (by_user, by_phone) = self
            .store
            .sms_sends_since(&user.id, &phone_hash, now - policy.window_secs)
            .await?;
        if let Err(retry_after) = policy.may_send(by_user, by_phone) {
            return Err(ServiceError::TooManyAttempts { retry_after });
        }
        let code = Zeroizing::new(policy.generate_code(&mut OsRng));
        let channel = m.kind.as_str().to_owned();
        let rec = SmsCodeRecord {
            id: new_id(),
            user_id: user.id.clone(),
            method_id: m.id.clone(),
            phone_hash,
            channel: channel.clone(),
            flow_key: flow_key.to_owned(),
            code_hash: self.hash("phone code", &code),
            attempts: 0,
            created_at: now,
            expires_at: now + policy.lifetime_secs,
            used_at: None,
        };
        let gateway = &self.config.sms.gateway;
        let mut tx = self.store.write().await?;
        tx.insert_sms_code(&rec).await?;
        tx.audit(
            &AuditEntry::new(
                "system",
                "phone.code.send",
                format!("user:{}", user.username),
                json!({ "method_id": m.id, "channel": channel, "to": phone.masked(), "expires_at": rec.expires_at, "gateway": gateway.describe() }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        let minutes = (policy.lifetime_secs + 59) / 60;
        let body = match m.kind {
            MethodKind::Voice => {
                let spoken: Vec<String> = code.chars().map(String::from).collect();
                self.config.sms.voice_template.replace("{code}", &spoken.join(" "))
            }
            _ => self.config.sms.sms_template.replace("{code}", &code),
        }
        .replace("{minutes}", &minutes.to_string());
        let msg = OutgoingMessage {
            channel: channel.clone(),
            to: phone.as_str().to_owned(),
            body,
        };
        if let Err(e) = gateway.send(&msg).await {
            tracing::warn!(user = %user.username, to = %phone.masked(), error = %e, "message gateway failed");
            return Err(ServiceError::GatewayFailed(gateway.describe()));
        }
        Ok(PhoneCodeSent {
            channel,
            to: phone.masked(),
            expires_at: rec.expires_at,
            development_only: gateway.is_development_only(),
        })
    }

    /// Check a code sent for `flow_key` (single use, attempt-limited, in SQL).
    pub(crate) async fn check_phone_code(
        &self,
        flow_key: &str,
        user: Option<&UserRecord>,
        code: &str,
        now: i64,
    ) -> ServiceResult<()> {
        let Some(user) = user else {
            return Err(ServiceError::InvalidCode);
        };
        let code =
            normalize_code(code).ok_or_else(|| ServiceError::InvalidRequest("the code must be 6-8 digits".into()))?;
        let Some(rec) = self
            .store
            .sms_code_for_flow(flow_key)
            .await?
            .filter(|r| r.user_id == user.id)
        else {
            return Err(ServiceError::InvalidRequest(
                "send a code first (POST /signin/{flow_id}/phone-code)".into(),
            ));
        };
        let max = self.config.sms.policy.max_attempts as i64;
        if self
            .store
            .use_sms_code(&rec.id, &self.hash("phone code", &code), max, now)
            .await?
        {
            Ok(())
        } else if rec.used_at.is_some() {
            Err(ServiceError::CodeReplayed)
        } else {
            Err(ServiceError::InvalidCode)
        }
    }

    /// `POST /signin/{flow}/phone-code`: text or call the user's phone.
    pub async fn signin_phone_send(&self, flow_id: &str, method: VerifyMethod) -> ServiceResult<PhoneCodeSent> {
        let kind = phone_kind(method)?;
        let (loaded, user) = self.flow_awaiting(flow_id, method).await?;
        let mut allowed = vec![method];
        self.drop_forbidden_phone_methods(&user, &mut allowed);
        if allowed.is_empty() {
            return Err(ServiceError::Forbidden(
                "SMS and voice are not allowed for privileged accounts".into(),
            ));
        }
        let m = self
            .usable_second_factor_methods(&user)
            .await?
            .into_iter()
            .find(|m| m.kind == kind)
            .ok_or_else(|| ServiceError::NotFound(format!("{} phone", kind.as_str())))?;
        self.send_phone_code(&user, &m, &loaded.key).await
    }

    /// Register a phone for SMS or voice codes; it stays pending until the
    /// code sent to it is confirmed.
    pub async fn enroll_phone(
        &self,
        p: &Principal,
        username: &str,
        method: VerifyMethod,
        phone: &str,
        label: Option<String>,
    ) -> ServiceResult<(MethodRecord, PhoneCodeSent)> {
        let kind = phone_kind(method)?;
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        if self.config.sms.forbid_privileged && user.privileged() {
            return Err(ServiceError::Forbidden(
                "SMS and voice are not allowed for privileged accounts; register a security key or passkey".into(),
            ));
        }
        let phone = PhoneNumber::parse(phone)?;
        let label = clean_label(
            label,
            if kind == MethodKind::Sms {
                "Text message"
            } else {
                "Phone call"
            },
        )?;
        let id = method_id();
        let now = self.now();
        let mut tx = self.store.write().await?;
        tx.insert_method(
            NewMethod {
                id: &id,
                user_id: &user.id,
                kind,
                label: &label,
                state: MethodState::Pending,
                secret_sealed: Some(self.keys.seal(phone.as_str().as_bytes(), &id)),
                params: json!({ "masked": phone.masked() }),
            },
            now,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.enroll.start",
                format!("user:{}", user.username),
                json!({ "method_id": id, "kind": kind, "label": label, "to": phone.masked() }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        let m = self
            .store
            .method(&user.id, &id)
            .await?
            .ok_or_else(|| ServiceError::Internal("method vanished".into()))?;
        let sent = self.send_phone_code(&user, &m, &format!("enroll:{id}")).await?;
        Ok((m, sent))
    }

    /// Confirm a pending phone with the code sent to it.
    pub async fn confirm_phone(
        &self,
        p: &Principal,
        username: &str,
        id: &str,
        code: &str,
    ) -> ServiceResult<MethodRecord> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let m = self
            .store
            .method(&user.id, id)
            .await?
            .filter(|m| matches!(m.kind, MethodKind::Sms | MethodKind::Voice))
            .ok_or_else(|| ServiceError::NotFound("phone method".into()))?;
        if m.state != MethodState::Pending {
            return Err(ServiceError::InvalidState("this method is already confirmed".into()));
        }
        let now = self.now();
        match self
            .check_phone_code(&format!("enroll:{id}"), Some(&user), code, now)
            .await
        {
            Ok(()) => {}
            Err(ServiceError::InvalidCode) => return Err(ServiceError::WrongConfirmationCode),
            Err(e) => return Err(e),
        }
        let mut tx = self.store.write().await?;
        if !tx.activate_method(&m.id, None, now).await? {
            return Err(ServiceError::InvalidState("this method is already confirmed".into()));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.add",
                format!("user:{}", user.username),
                json!({ "method_id": m.id, "kind": m.kind, "label": m.label, "to": m.params.get("masked") }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A new sign-in method was added to your account",
            &format!(
                "A phone ({}) was registered for {} codes. If this was not you, call the helpdesk now.",
                m.params.get("masked").and_then(|v| v.as_str()).unwrap_or("?"),
                m.kind.as_str()
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        self.store
            .method(&user.id, id)
            .await?
            .ok_or_else(|| ServiceError::Internal("method vanished".into()))
    }
}
