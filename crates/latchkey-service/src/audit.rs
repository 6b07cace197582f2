//! Reading the audit chain: pages of events and the chain's verification.
//! Writing happens inside each change's own transaction (`latchkey-store`).

use latchkey_core::audit::ChainVerification;
use latchkey_core::Role;
use latchkey_store::AuditPage;

use crate::app::{App, Principal};
use crate::error::{ServiceError, ServiceResult};

fn require_auditor(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::Auditor) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "the audit log needs the auditor or admin role".into(),
        ))
    }
}

impl App {
    /// Events after `after`, oldest first (auditors and admins).
    pub async fn audit_page(
        &self,
        p: &Principal,
        after: i64,
        limit: i64,
        target: Option<&str>,
    ) -> ServiceResult<AuditPage> {
        require_auditor(p)?;
        Ok(self
            .store
            .audit_page(after.max(0), limit.clamp(1, 10_000), target)
            .await?)
    }

    /// Recompute every link of the chain; names the first broken one.
    pub async fn verify_audit(&self, p: &Principal) -> ServiceResult<ChainVerification> {
        require_auditor(p)?;
        Ok(self.store.verify_audit_chain().await?)
    }
}
