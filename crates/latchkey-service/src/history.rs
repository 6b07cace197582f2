//! App operations only the web UI needs: the sign-in flow's state as a page
//! draws it (read by `App::signin_flow_state` in `crate::signin`), and a
//! user's sign-in history.

use latchkey_core::signin::SignInFlow;
use latchkey_store::SignInLogEntry;

use crate::app::{App, Principal};
use crate::error::ServiceResult;

/// A sign-in in progress, as the sign-in page needs it.
#[derive(Debug, Clone)]
pub struct WebFlow {
    pub username: String,
    pub flow: SignInFlow,
}

impl App {
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
