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
    /// Ask for the Temporary Access Pass before the password: the user has
    /// no password, or a pass that works now (a bootstrap administrator, a
    /// user the helpdesk is onboarding or recovering).
    pub pass_first: bool,
}

impl App {
    /// The unused codes of a user's recovery-code set (None: no set).
    pub async fn recovery_codes_left(&self, p: &Principal, username: &str) -> ServiceResult<Option<i64>> {
        let (_, methods) = self.methods(p, username).await?;
        match methods
            .iter()
            .find(|m| m.kind == latchkey_core::MethodKind::RecoveryCodes)
        {
            Some(m) => Ok(Some(self.store.recovery_codes_left(&m.id).await?)),
            None => Ok(None),
        }
    }

    /// Seal a short-lived value for this browser (recovery codes between the
    /// POST that makes them and the page that shows them), bound to `binding`.
    pub fn seal_for_browser(&self, plain: &str, binding: &str) -> String {
        data_encoding::BASE64URL_NOPAD.encode(&self.keys.seal(plain.as_bytes(), &format!("web flash v1\0{binding}")))
    }

    /// Open what [`App::seal_for_browser`] sealed with the same binding.
    pub fn open_for_browser(&self, sealed: &str, binding: &str) -> Option<String> {
        let bytes = data_encoding::BASE64URL_NOPAD.decode(sealed.as_bytes()).ok()?;
        let plain = self.keys.open(&bytes, &format!("web flash v1\0{binding}")).ok()?;
        String::from_utf8(plain.to_vec()).ok()
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
