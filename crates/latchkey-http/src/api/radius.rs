//! Admin API for RADIUS clients (NAS): add, list, remove.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, Auth};
use latchkey_service::app::App;

type AppState = Arc<App>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RadiusClientRequest {
    /// Shown to conditional access as the application, e.g. `vpn`.
    pub name: String,
    /// The NAS's source address.
    pub ip: String,
    /// Shared secret, 16-128 characters. Stored sealed; never shown again.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct RadiusClientView {
    pub id: String,
    pub name: String,
    pub ip: String,
    pub created_by: String,
    pub created_at: String,
}

impl From<&latchkey_store::RadiusClientRecord> for RadiusClientView {
    fn from(c: &latchkey_store::RadiusClientRecord) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            ip: c.ip.clone(),
            created_by: c.created_by.clone(),
            created_at: crate::api::rfc3339(c.created_at),
        }
    }
}

/// Register a RADIUS client (NAS) by source IP with its shared secret (admin).
#[utoipa::path(post, path = "/api/v1/radius/clients", tag = "radius", request_body = RadiusClientRequest,
    responses((status = 201, body = RadiusClientView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_client(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<RadiusClientRequest>,
) -> ApiResult<(StatusCode, Json<RadiusClientView>)> {
    let c = app.add_radius_client(&p, &req.name, &req.ip, &req.secret).await?;
    Ok((StatusCode::CREATED, Json(RadiusClientView::from(&c))))
}

/// List RADIUS clients (admin).
#[utoipa::path(get, path = "/api/v1/radius/clients", tag = "radius",
    responses((status = 200, body = Vec<RadiusClientView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_clients(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<RadiusClientView>>> {
    Ok(Json(
        app.list_radius_clients(&p)
            .await?
            .iter()
            .map(RadiusClientView::from)
            .collect(),
    ))
}

/// Remove a RADIUS client (admin).
#[utoipa::path(delete, path = "/api/v1/radius/clients/{id}", tag = "radius", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_client(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.remove_radius_client(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(OpenApi)]
#[openapi(paths(create_client, list_clients, delete_client))]
pub struct RadiusDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/radius/clients", post(create_client).get(list_clients))
        .route("/api/v1/radius/clients/{id}", delete(delete_client))
}
