//! `latchkey oidc ...` and `latchkey radius ...`: the relying parties and
//! network devices that delegate sign-in to Latchkey.

use anyhow::Result;
use clap::Subcommand;
use latchkey_service::app::{App, Principal};
use serde_json::json;

#[derive(Subcommand)]
pub enum OidcCmd {
    /// OpenID Connect clients (relying parties).
    Client {
        #[command(subcommand)]
        cmd: OidcClientCmd,
    },
    /// Replace the ID-token signing key now (the old one stays published until its tokens expire).
    RotateKeys,
}

#[derive(Subcommand)]
pub enum OidcClientCmd {
    /// Register a client; a confidential client's secret is printed once.
    Add {
        #[arg(long)]
        name: String,
        /// confidential (has a secret) or public (PKCE only)
        #[arg(long = "type", default_value = "confidential")]
        kind: String,
        /// Exact redirect URI (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Where RP-initiated logout may return to (repeatable).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a client; its grants and tokens stop working.
    Remove { client_id: String },
}

#[derive(Subcommand)]
pub enum RadiusCmd {
    /// RADIUS clients (NAS): VPN concentrators, wireless controllers, switches.
    Client {
        #[command(subcommand)]
        cmd: RadiusClientCmd,
    },
}

#[derive(Subcommand)]
pub enum RadiusClientCmd {
    /// Register a NAS by its source IP with a shared secret (16+ characters).
    Add {
        #[arg(long)]
        ip: String,
        #[arg(long)]
        secret: String,
        /// Name shown to conditional access as the application.
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        id: String,
    },
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn oidc(app: &App, cmd: OidcCmd) -> Result<()> {
    let op = Principal::Operator;
    match cmd {
        OidcCmd::RotateKeys => {
            let kid = app.rotate_signing_key(&op).await?;
            println!("new signing key {kid}");
        }
        OidcCmd::Client { cmd } => match cmd {
            OidcClientCmd::Add {
                name,
                kind,
                redirect_uris,
                post_logout_redirect_uris,
                json,
            } => {
                let r = app
                    .register_oidc_client(&op, &name, &kind, redirect_uris, post_logout_redirect_uris)
                    .await?;
                let c = &r.client;
                if json {
                    print_json(&json!({
                        "client_id": c.id, "name": c.name, "type": c.kind, "client_secret": r.secret,
                        "redirect_uris": c.redirect_uris, "post_logout_redirect_uris": c.post_logout_redirect_uris,
                    }))?;
                } else {
                    println!("client_id:     {}", c.id);
                    if let Some(s) = &r.secret {
                        println!("client_secret: {s}");
                        eprintln!("The client secret is shown once; store it now.");
                    }
                    println!("issuer:        {}", app.issuer());
                }
            }
            OidcClientCmd::List { json } => {
                let cs = app.list_oidc_clients(&op).await?;
                if json {
                    let v: Vec<_> = cs
                        .iter()
                        .map(|c| json!({ "client_id": c.id, "name": c.name, "type": c.kind, "redirect_uris": c.redirect_uris, "post_logout_redirect_uris": c.post_logout_redirect_uris, "created_at": c.created_at }))
                        .collect();
                    print_json(&json!(v))?;
                } else {
                    for c in cs {
                        println!(
                            "{:<38} {:<13} {:<24} {}",
                            c.id,
                            c.kind,
                            c.name,
                            c.redirect_uris.join(" ")
                        );
                    }
                }
            }
            OidcClientCmd::Remove { client_id } => {
                app.remove_oidc_client(&op, &client_id).await?;
                println!("removed client {client_id}");
            }
        },
    }
    Ok(())
}

pub async fn radius(app: &App, cmd: RadiusCmd) -> Result<()> {
    let op = Principal::Operator;
    let RadiusCmd::Client { cmd } = cmd;
    match cmd {
        RadiusClientCmd::Add { ip, secret, name, json } => {
            let c = app.add_radius_client(&op, &name, &ip, &secret).await?;
            if json {
                print_json(&json!({ "id": c.id, "name": c.name, "ip": c.ip }))?;
            } else {
                println!("RADIUS client '{}' ({}) added with id {}", c.name, c.ip, c.id);
            }
        }
        RadiusClientCmd::List { json } => {
            let cs = app.list_radius_clients(&op).await?;
            if json {
                let v: Vec<_> = cs
                    .iter()
                    .map(|c| json!({ "id": c.id, "name": c.name, "ip": c.ip, "created_at": c.created_at }))
                    .collect();
                print_json(&json!(v))?;
            } else {
                for c in cs {
                    println!("{:<38} {:<24} {}", c.id, c.name, c.ip);
                }
            }
        }
        RadiusClientCmd::Remove { id } => {
            app.remove_radius_client(&op, &id).await?;
            println!("removed RADIUS client {id}");
        }
    }
    Ok(())
}
