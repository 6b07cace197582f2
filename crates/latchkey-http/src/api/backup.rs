//! HTTP shell for backups (admin). The copy is written on the server, into
//! the configured backup folder, and never streamed: a database copy holds
//! every password hash and sealed secret, so an API token must not be able
//! to carry it off the host; the operator's file-level backup tooling takes
//! it from the folder. The response names the file and its audit head.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::Auth;
use latchkey_service::app::App;

type AppState = Arc<App>;

#[derive(Serialize, ToSchema)]
pub struct BackupView {
    /// Path of the copy on the server.
    pub file: String,
    pub bytes: u64,
    /// The audit chain in the copy ends here.
    pub audit_head_seq: i64,
    pub audit_head_hash: String,
    /// The key file is not in the copy.
    pub key_file: String,
}

/// Write a consistent copy of the database into the server's backup folder
/// while it serves (admin; audited). SQLite only: PostgreSQL uses pg_dump.
#[utoipa::path(post, path = "/api/v1/backups", tag = "operations",
    responses((status = 201, body = BackupView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_backup(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<(StatusCode, Json<BackupView>)> {
    let b = app.backup_to_folder(&p).await?;
    Ok((
        StatusCode::CREATED,
        Json(BackupView {
            file: b.file.display().to_string(),
            bytes: b.bytes,
            audit_head_seq: b.audit_head_seq,
            audit_head_hash: b.audit_head_hash,
            key_file: b.key_file.into(),
        }),
    ))
}

#[derive(OpenApi)]
#[openapi(paths(create_backup), components(schemas(BackupView)))]
pub struct BackupDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/backups", post(create_backup))
}
