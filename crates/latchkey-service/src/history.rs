//! App operations only the web UI needs: reading a sign-in flow's state to
//! draw the next step, and a user's sign-in history.

use latchkey_core::secret::keyed_hash;
use latchkey_core::signin::SignInFlow;
use latchkey_store::SignInLogEntry;

use crate::app::{App, Principal, FLOW_PREFIX};
use crate::error::{ServiceError, ServiceResult};

/// A sign-in in progress, as the sign-in page needs it.
#[derive(Debug, Clone)]
pub struct WebFlow {
    pub username: String,
    pub flow: SignInFlow,
}

impl App {
    /// The state of a flow this browser holds, without advancing it.
    pub async fn signin_flow_state(&self, flow_id: &str) -> ServiceResult<WebFlow> {
        if !flow_id.starts_with(FLOW_PREFIX) || flow_id.len() > 128 {
            return Err(ServiceError::FlowNotFound);
        }
        let now = self.now();
        // Same keyed hash as App::signin_verify stores flows under.
        let rec = self
            .store
            .flow(&keyed_hash(self.keys.pepper(), "flow", flow_id), now)
            .await?
            .ok_or(ServiceError::FlowNotFound)?;
        let flow: SignInFlow =
            serde_json::from_str(&rec.flow_json).map_err(|e| ServiceError::Internal(format!("stored flow: {e}")))?;
        if flow.is_expired(now) {
            return Err(ServiceError::FlowNotFound);
        }
        Ok(WebFlow {
            username: rec.username,
            flow,
        })
    }

    /// A user's recent sign-ins (the user, helpdesk, auditors, admins).
    pub async fn signin_history(
        &self,
        p: &Principal,
        username: &str,
        limit: i64,
    ) -> ServiceResult<Vec<SignInLogEntry>> {
        let user = self.get_user(p, username).await?;
        Ok(self.store.signins_for_user(&user.id, limit).await?)
    }
}
