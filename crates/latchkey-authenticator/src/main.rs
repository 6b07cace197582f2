//! `latchkey-authenticator`: a command-line authenticator for Latchkey push
//! approvals, speaking the same protocol as the PWA at `/authenticator`.
//!
//! - `enroll --url <enrollment URL>`: generates a P-256 key pair here, sends
//!   the public key with the one-time token, and stores the private key and
//!   the device token in a file readable only by its owner (0600).
//! - `listen`: receives prompts over Server-Sent Events, shows who is signing
//!   in, from where and when, asks for the number on the sign-in screen, and
//!   answers with a signature over
//!   `latchkey_core::push::canonical_payload` (the server's own definition).
//!   `--number`, `--deny`, `--report` and `--once` make it scriptable.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use latchkey_core::push::{canonical_payload, Decision};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "latchkey-authenticator",
    version,
    about = "Approve Latchkey sign-ins from the command line"
)]
struct Cli {
    /// Where the device key and token are kept (created 0600).
    #[arg(long, global = true, env = "LATCHKEY_AUTHENTICATOR_FILE")]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Register this device with the enrollment URL from the security-info page.
    Enroll {
        /// e.g. https://latchkey.example/authenticator#enroll=lk_pe_...
        #[arg(long)]
        url: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// Wait for sign-in prompts and answer them.
    Listen {
        /// Approve with this number instead of asking (for scripts and tests).
        #[arg(long, conflicts_with_all = ["deny", "report"])]
        number: Option<u8>,
        /// Deny every prompt.
        #[arg(long, conflicts_with = "report")]
        deny: bool,
        /// Answer "this wasn't me": deny and report.
        #[arg(long)]
        report: bool,
        /// Exit after answering one prompt.
        #[arg(long)]
        once: bool,
        /// Give up after this many seconds without a prompt (0 = never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Show pending prompts as JSON.
    Prompts,
}

/// What the key file holds.
#[derive(Serialize, Deserialize)]
struct DeviceFile {
    server: String,
    username: String,
    method_id: String,
    device_token: String,
    /// P-256 private scalar, hex.
    private_key: String,
}

fn default_key_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("latchkey-authenticator").join("device.json")
}

/// Split `https://host/authenticator#enroll=TOKEN` into (server base, token).
fn parse_enrollment_url(url: &str) -> Result<(String, String)> {
    let (before, fragment) = url
        .split_once('#')
        .context("the enrollment URL has no '#enroll=' part")?;
    let token = fragment
        .split('&')
        .find_map(|kv| kv.strip_prefix("enroll="))
        .context("the enrollment URL has no 'enroll=' token")?;
    let base = before
        .strip_suffix("/authenticator")
        .or_else(|| before.strip_suffix("/authenticator/"))
        .context("the enrollment URL must point at <server>/authenticator")?;
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("the enrollment URL must start with http:// or https://");
    }
    Ok((base.to_owned(), token.to_owned()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn load(path: &Path) -> Result<(DeviceFile, SigningKey)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {} (enroll first)", path.display()))?;
    let d: DeviceFile = serde_json::from_str(&text).context("the key file is damaged")?;
    let raw = data_encoding::HEXLOWER
        .decode(d.private_key.as_bytes())
        .context("the key file's private key is damaged")?;
    let key = SigningKey::from_slice(&raw).context("the key file's private key is not a P-256 key")?;
    Ok((d, key))
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

async fn problem(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::anyhow!(
        "server answered {status}: {}",
        body["detail"].as_str().unwrap_or("no detail")
    )
}

async fn enroll(path: &Path, url: &str, label: Option<String>) -> Result<()> {
    let (server, token) = parse_enrollment_url(url)?;
    let key = SigningKey::random(&mut OsRng);
    let public = key.verifying_key().to_encoded_point(false);
    let resp = client()?
        .post(format!("{server}/api/v1/push/devices"))
        .json(&json!({
            "enrollment_token": token,
            "public_key": data_encoding::BASE64URL_NOPAD.encode(public.as_bytes()),
            "label": label,
        }))
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    if !resp.status().is_success() {
        return Err(problem(resp).await);
    }
    let v: Value = resp.json().await?;
    let file = DeviceFile {
        server,
        username: v["username"].as_str().unwrap_or_default().to_owned(),
        method_id: v["method_id"].as_str().unwrap_or_default().to_owned(),
        device_token: v["device_token"]
            .as_str()
            .context("no device token in the answer")?
            .to_owned(),
        private_key: data_encoding::HEXLOWER.encode(&key.to_bytes()),
    };
    write_private(path, &serde_json::to_string_pretty(&file)?)?;
    println!(
        "Enrolled for {} (device {}). Key stored in {}",
        file.username,
        file.method_id,
        path.display()
    );
    Ok(())
}

/// One Server-Sent Events message.
#[derive(Debug, PartialEq, Eq)]
struct SseEvent {
    event: String,
    data: String,
}

/// Incremental parser for the `text/event-stream` format (WHATWG HTML
/// §9.2): events end at a blank line; `event:` names it, `data:` lines are
/// joined with '\n'; lines starting with ':' are comments (keep-alives).
#[derive(Default)]
struct SseParser {
    buf: String,
}

impl SseParser {
    fn push(&mut self, chunk: &str) -> Vec<SseEvent> {
        self.buf.push_str(&chunk.replace("\r\n", "\n"));
        let mut out = vec![];
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data: Vec<&str> = vec![];
            for line in block.lines() {
                if line.starts_with(':') || line.is_empty() {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                out.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

enum Answer {
    Number(u8),
    Deny,
    Report,
}

fn show(p: &Value) {
    let at = p["created_at"]
        .as_i64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    println!("Sign-in request for {}", p["username"].as_str().unwrap_or("?"));
    println!("  application: {}", p["application"].as_str().unwrap_or("(not named)"));
    println!(
        "  from:        {} ({})",
        p["source_ip"].as_str().unwrap_or("unknown address"),
        p["location"].as_str().unwrap_or("unknown location")
    );
    println!("  time:        {at}");
}

fn ask() -> Result<Answer> {
    loop {
        print!("Type the number shown on the sign-in screen, 'd' to deny, or 'r' if this wasn't you: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            return Ok(Answer::Deny);
        }
        match line.trim() {
            "d" | "D" => return Ok(Answer::Deny),
            "r" | "R" => return Ok(Answer::Report),
            s => match s.parse::<u8>() {
                Ok(n) => return Ok(Answer::Number(n)),
                Err(_) => println!("Please type the two-digit number."),
            },
        }
    }
}

async fn respond(d: &DeviceFile, key: &SigningKey, p: &Value, a: Answer) -> Result<String> {
    let (decision, number) = match a {
        Answer::Number(n) => (Decision::Approve, Some(n)),
        Answer::Deny => (Decision::Deny, None),
        Answer::Report => (Decision::Report, None),
    };
    let id = p["id"].as_str().context("prompt without an id")?;
    let payload = canonical_payload(id, p["challenge"].as_str().unwrap_or_default(), number, decision);
    let sig: Signature = key.sign(payload.as_bytes());
    let resp = client()?
        .post(format!("{}/api/v1/push/prompts/{id}/answer", d.server))
        .bearer_auth(&d.device_token)
        .json(&json!({
            "decision": decision.as_str(),
            "number": number,
            "signature": data_encoding::BASE64URL_NOPAD.encode(&sig.to_bytes()),
        }))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(problem(resp).await);
    }
    let v: Value = resp.json().await?;
    Ok(v["status"].as_str().unwrap_or_default().to_owned())
}

async fn listen(path: &Path, fixed: Option<Answer>, once: bool, timeout: u64) -> Result<()> {
    let (d, key) = load(path)?;
    let mut resp = client()?
        .get(format!("{}/api/v1/push/prompts/stream", d.server))
        .bearer_auth(&d.device_token)
        .send()
        .await
        .with_context(|| format!("connecting to {}", d.server))?;
    if !resp.status().is_success() {
        return Err(problem(resp).await);
    }
    let mut parser = SseParser::default();
    let deadline = (timeout > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(timeout));
    loop {
        let chunk = match deadline {
            Some(dl) => match tokio::time::timeout_at(dl, resp.chunk()).await {
                Ok(c) => c?,
                Err(_) => bail!("no prompt within {timeout} seconds"),
            },
            None => resp.chunk().await?,
        };
        let Some(chunk) = chunk else {
            bail!("the server closed the stream");
        };
        for ev in parser.push(&String::from_utf8_lossy(&chunk)) {
            match ev.event.as_str() {
                "ready" => {
                    println!("Listening for sign-in prompts for {} at {}", d.username, d.server);
                }
                "prompt" => {
                    let p: Value = serde_json::from_str(&ev.data).context("a prompt event that is not JSON")?;
                    show(&p);
                    let a = match &fixed {
                        Some(Answer::Number(n)) => Answer::Number(*n),
                        Some(Answer::Deny) => Answer::Deny,
                        Some(Answer::Report) => Answer::Report,
                        None => ask()?,
                    };
                    match respond(&d, &key, &p, a).await {
                        Ok(status) => println!("Answer sent: {status}"),
                        Err(e) => println!("Answer refused: {e:#}"),
                    }
                    std::io::stdout().flush()?;
                    if once {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }
}

async fn prompts(path: &Path) -> Result<()> {
    let (d, _) = load(path)?;
    let resp = client()?
        .get(format!("{}/api/v1/push/prompts", d.server))
        .bearer_auth(&d.device_token)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(problem(resp).await);
    }
    let v: Value = resp.json().await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let path = cli.key_file.unwrap_or_else(default_key_file);
    match cli.cmd {
        Cmd::Enroll { url, label } => enroll(&path, &url, label).await,
        Cmd::Listen {
            number,
            deny,
            report,
            once,
            timeout,
        } => {
            let fixed = match (number, deny, report) {
                (Some(n), _, _) => Some(Answer::Number(n)),
                (None, true, _) => Some(Answer::Deny),
                (None, false, true) => Some(Answer::Report),
                _ => None,
            };
            listen(&path, fixed, once, timeout).await
        }
        Cmd::Prompts => prompts(&path).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_urls() {
        assert_eq!(
            parse_enrollment_url("http://127.0.0.1:8080/authenticator#enroll=lk_pe_abc").unwrap(),
            ("http://127.0.0.1:8080".into(), "lk_pe_abc".into())
        );
        assert!(parse_enrollment_url("http://x/authenticator").is_err());
        assert!(parse_enrollment_url("ftp://x/authenticator#enroll=a").is_err());
        assert!(parse_enrollment_url("http://x/other#enroll=a").is_err());
    }

    #[test]
    fn sse_events_across_chunks_with_comments() {
        let mut p = SseParser::default();
        assert!(p.push("event: ready\ndata: {}\n").is_empty());
        let ev = p.push("\n: keep-alive\n\nevent: prompt\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n");
        assert_eq!(
            ev,
            vec![
                SseEvent {
                    event: "ready".into(),
                    data: "{}".into()
                },
                SseEvent {
                    event: "prompt".into(),
                    data: "{\"a\":\n1}".into()
                }
            ]
        );
    }

    #[test]
    fn key_file_is_private_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("lk-auth-test-{}", std::process::id()));
        let path = dir.join("device.json");
        let key = SigningKey::random(&mut OsRng);
        let f = DeviceFile {
            server: "http://x".into(),
            username: "u".into(),
            method_id: "m".into(),
            device_token: "lk_pd_x".into(),
            private_key: data_encoding::HEXLOWER.encode(&key.to_bytes()),
        };
        write_private(&path, &serde_json::to_string(&f).unwrap()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (_, loaded) = load(&path).unwrap();
        assert_eq!(loaded.to_bytes(), key.to_bytes());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
