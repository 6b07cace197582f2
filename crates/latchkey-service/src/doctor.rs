//! `latchkey doctor`: what in the deployment's own state weakens the rules
//! it enforces (one list, shown by the CLI, the API and the console).

use latchkey_core::Role;

use crate::app::{App, Principal, API_SCOPE_ADMIN};
use crate::error::{ServiceError, ServiceResult};

/// One thing the operator should look at.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DoctorFinding {
    /// `warning` (a rule is weaker than it looks) or `error` (broken).
    pub level: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl App {
    /// The findings, most serious first (admins and auditors).
    pub async fn doctor(&self, p: &Principal) -> ServiceResult<Vec<DoctorFinding>> {
        if !p.has_role(Role::Auditor) {
            return Err(ServiceError::Forbidden("doctor needs the auditor or admin role".into()));
        }
        let mut out = Vec::new();
        let chain = self.store.verify_audit_chain().await?;
        if !chain.ok {
            out.push(DoctorFinding {
                level: "error",
                code: "audit_chain_broken",
                message: match &chain.first_broken {
                    Some(b) => format!("the audit chain does not verify: event {}: {}", b.seq, b.reason),
                    None => "the audit chain does not verify".to_owned(),
                },
            });
        }
        let admins = self.active_admin_count().await?;
        if admins < 2 {
            out.push(DoctorFinding {
                level: "warning",
                code: "fewer_than_two_admins",
                message: format!(
                    "{admins} active administrator(s): a privileged change request (a pass, a password, a method \
                     or a device of anyone holding a role, a role grant) waits for a second administrator, and \
                     none can approve it; add a second administrator, or use the break-glass account"
                ),
            });
        }
        let ownerless = self
            .store
            .list_api_tokens()
            .await?
            .into_iter()
            .filter(|(t, _, revoked)| {
                revoked.is_none() && t.owner_user_id.is_none() && t.scopes.iter().any(|s| s == API_SCOPE_ADMIN)
            })
            .map(|(t, _, _)| t.name)
            .collect::<Vec<_>>();
        if !ownerless.is_empty() {
            out.push(DoctorFinding {
                level: "warning",
                code: "admin_tokens_without_owner",
                message: format!(
                    "admin API token(s) without an owner approve nothing and are audited without a person: {} \
                     (replace them with `latchkey admin api-token create --owner USERNAME`)",
                    ownerless.join(", ")
                ),
            });
        }
        Ok(out)
    }
}
