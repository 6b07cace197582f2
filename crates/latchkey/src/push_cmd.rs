//! Command-line settings for push approval and SMS/voice codes.

use std::path::Path;

use clap::Args;
use latchkey_service::sms::{GatewayConfig, MessageGateway, OutboxGateway, SmtpGateway, WebhookGateway};
use latchkey_service::Config;

#[derive(Args, Clone, Debug)]
pub struct PushSmsArgs {
    /// Push prompts one user may receive per window (fatigue protection).
    #[arg(long, global = true, env = "LATCHKEY_PUSH_MAX_PROMPTS", default_value_t = 3)]
    push_max_prompts: u32,
    /// The push rate-limit window, in minutes.
    #[arg(long, global = true, env = "LATCHKEY_PUSH_WINDOW_MINUTES", default_value_t = 10)]
    push_window_minutes: i64,
    /// Denied, reported or unanswered prompts within an hour that suspend push for an hour.
    #[arg(long, global = true, env = "LATCHKEY_PUSH_SUSPEND_AFTER", default_value_t = 3)]
    push_suspend_after: u32,
    /// How long a push prompt waits for its answer, in seconds.
    #[arg(long, global = true, env = "LATCHKEY_PUSH_PROMPT_SECONDS", default_value_t = 60)]
    push_prompt_seconds: i64,
    /// SMS/voice gateway: `outbox` (development only: writes messages to
    /// <data>/outbox-messages.jsonl, sends nothing), `webhook` or `smtp` (email-to-SMS).
    #[arg(long, global = true, env = "LATCHKEY_SMS_GATEWAY", default_value = "outbox", value_parser = ["outbox", "webhook", "smtp"])]
    sms_gateway: String,
    /// SMTP relay for email-to-SMS (plain SMTP: use a relay on this host or network).
    #[arg(long, global = true, env = "LATCHKEY_SMS_SMTP_HOST")]
    sms_smtp_host: Option<String>,
    #[arg(long, global = true, env = "LATCHKEY_SMS_SMTP_PORT", default_value_t = 25)]
    sms_smtp_port: u16,
    #[arg(long, global = true, env = "LATCHKEY_SMS_SMTP_USERNAME")]
    sms_smtp_username: Option<String>,
    #[arg(long, global = true, env = "LATCHKEY_SMS_SMTP_PASSWORD", hide_env_values = true)]
    sms_smtp_password: Option<String>,
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_SMS_SMTP_FROM",
        default_value = "latchkey@localhost"
    )]
    sms_smtp_from: String,
    /// Recipient template, `{number}` = E.164 digits, e.g. `{number}@sms.example.net`.
    #[arg(long, global = true, env = "LATCHKEY_SMS_SMTP_TO")]
    sms_smtp_to: Option<String>,
    /// Webhook URL of the SMS/voice provider.
    #[arg(long, global = true, env = "LATCHKEY_SMS_WEBHOOK_URL")]
    sms_webhook_url: Option<String>,
    #[arg(long, global = true, env = "LATCHKEY_SMS_WEBHOOK_METHOD", default_value = "POST")]
    sms_webhook_method: String,
    /// Extra request header, `Name: value` (repeatable), e.g. the provider's API key.
    #[arg(long, global = true, value_parser = parse_header)]
    sms_webhook_header: Vec<(String, String)>,
    /// Body template with {to}, {message}, {channel}.
    #[arg(long, global = true, env = "LATCHKEY_SMS_WEBHOOK_BODY")]
    sms_webhook_body: Option<String>,
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_SMS_WEBHOOK_CONTENT_TYPE",
        default_value = "application/json"
    )]
    sms_webhook_content_type: String,
    /// Privileged users (any administrative role) may not register or use SMS/voice.
    #[arg(long, global = true, env = "LATCHKEY_SMS_FORBID_PRIVILEGED")]
    sms_forbid_privileged: bool,
    /// Digits in SMS/voice codes (6-8).
    #[arg(long, global = true, env = "LATCHKEY_SMS_CODE_DIGITS", default_value_t = 6, value_parser = clap::value_parser!(u32).range(6..=8))]
    sms_code_digits: u32,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("a header is 'Name: value'")?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

impl PushSmsArgs {
    pub fn apply(&self, c: &mut Config, data: &Path) {
        c.push.fatigue.max_prompts = self.push_max_prompts.max(1);
        c.push.fatigue.window_secs = self.push_window_minutes.max(1) * 60;
        c.push.fatigue.suspend_after = self.push_suspend_after.max(1);
        c.push.prompt_lifetime_secs = self.push_prompt_seconds.clamp(10, 600);
        c.sms.forbid_privileged = self.sms_forbid_privileged;
        c.sms.policy.digits = self.sms_code_digits;
        c.sms.gateway = match (self.sms_gateway.as_str(), &self.sms_webhook_url) {
            ("webhook", Some(url)) => {
                let mut g = WebhookGateway {
                    url: url.clone(),
                    method: self.sms_webhook_method.clone(),
                    headers: self.sms_webhook_header.clone(),
                    content_type: self.sms_webhook_content_type.clone(),
                    ..Default::default()
                };
                if let Some(b) = &self.sms_webhook_body {
                    g.body_template = b.clone();
                }
                GatewayConfig::Webhook(g)
            }
            ("smtp", _) if self.sms_smtp_host.is_some() && self.sms_smtp_to.is_some() => {
                GatewayConfig::Smtp(SmtpGateway {
                    host: self.sms_smtp_host.clone().unwrap_or_default(),
                    port: self.sms_smtp_port,
                    username: self.sms_smtp_username.clone(),
                    password: self.sms_smtp_password.clone(),
                    from: self.sms_smtp_from.clone(),
                    to_template: self.sms_smtp_to.clone().unwrap_or_default(),
                    subject: "Latchkey code".into(),
                })
            }
            _ => GatewayConfig::Outbox(OutboxGateway {
                path: data.join("outbox-messages.jsonl"),
            }),
        };
    }
}

/// Say at startup where SMS/voice codes go; loudly when nothing is sent.
pub fn announce(c: &Config) {
    let g = &c.sms.gateway;
    println!("SMS/voice gateway: {}", g.describe());
    if g.is_development_only() {
        tracing::warn!(
            "SMS/voice codes go to a DEVELOPMENT-ONLY outbox file; configure --sms-gateway webhook for real delivery"
        );
    }
}
