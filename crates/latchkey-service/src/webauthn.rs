//! WebAuthn operations on [`App`]: registering security keys and passkeys,
//! the assertion step of a sign-in, usernameless passkey sign-in, and the
//! admin policy. The protocol and its cryptography are webauthn-rs's; this
//! file stores ceremony state, applies `latchkey_core::webauthn`'s rules and
//! records everything with its audit event.
//!
//! Ceremony state is serialised into the store (webauthn-rs's
//! `danger-allow-state-serialisation`) so any node can finish what another
//! began; finishing deletes the row first, so a challenge verifies once.

use data_encoding::BASE64URL_NOPAD;
use latchkey_core::secret::random_token;
use latchkey_core::signin::SignInFlow;
use latchkey_core::webauthn::{
    self as rules, AssertionFacts, AttestationRequirement, CeremonyPurpose, CeremonyState, CounterCheck,
    CredentialKind, WebauthnPolicy, CEREMONY_LIFETIME_SECS,
};
use latchkey_core::{MethodKind, MethodState, UserState};
use latchkey_store::{
    method_id, AuditEntry, CeremonyRecord, FlowRecord, NewMethod, NewWebauthnCredential, UserRecord,
    WebauthnCredentialRecord,
};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestationMetadata, AttestedPasskeyRegistration,
    CreationChallengeResponse, Credential, DiscoverableAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Url, Uuid, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};
use webauthn_rs_core::proto::{AuthenticatorSelectionCriteria, Registration, ResidentKeyRequirement};

use crate::app::{App, FlowView, Principal, SignInContext};
use crate::error::{ServiceError, ServiceResult};

pub const CEREMONY_PREFIX: &str = "lk_wc_";

/// The relying party this server is: RP ID and the origin browsers show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origin: Url,
    /// Local development only: `localhost` on any port.
    pub any_port: bool,
}

/// Derive the relying party from the configuration. Without explicit
/// `rp_id`/`rp_origin` both come from `public_url`. WebAuthn does not allow
/// IP addresses as RP IDs, so a loopback address becomes `localhost` (any
/// port) for local use.
pub fn relying_party(public_url: &str, rp_id: Option<&str>, rp_origin: Option<&str>) -> ServiceResult<RelyingParty> {
    let bad = |e: String| ServiceError::Internal(format!("WebAuthn relying party: {e}"));
    let mut origin = Url::parse(rp_origin.unwrap_or(public_url)).map_err(|e| bad(e.to_string()))?;
    let host = origin.host_str().unwrap_or_default().to_owned();
    let loopback = matches!(host.as_str(), "127.0.0.1" | "[::1]" | "::1" | "localhost");
    if loopback && rp_origin.is_none() {
        origin.set_host(Some("localhost")).map_err(|e| bad(e.to_string()))?;
    }
    origin.set_path("");
    let id = match rp_id {
        Some(id) => id.to_owned(),
        None if loopback => "localhost".to_owned(),
        None => host,
    };
    Ok(RelyingParty {
        any_port: loopback && id == "localhost",
        id,
        origin,
    })
}

/// What we keep between `register/start` and `register/finish`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "state", rename_all = "snake_case")]
enum RegistrationCeremony {
    SecurityKey(SecurityKeyRegistration),
    Passkey(PasskeyRegistration),
    AttestedPasskey(AttestedPasskeyRegistration),
}

/// What we keep between a sign-in challenge and the verify step.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "state", rename_all = "snake_case")]
enum AssertionCeremony {
    /// After a password: any of the user's credentials, UV preferred.
    SecondFactor(SecurityKeyAuthentication),
    /// No password: a discoverable credential with UV required.
    Discoverable(DiscoverableAuthentication),
}

pub struct RegistrationStart {
    pub ceremony_id: String,
    pub expires_at: i64,
    pub options: CreationChallengeResponse,
}

pub struct AssertionStart {
    pub flow: FlowView,
    pub options: RequestChallengeResponse,
}

/// What a verified assertion established, for `signin_verify`.
pub(crate) struct AssertionOutcome {
    pub user: UserRecord,
    pub amr: Vec<String>,
    /// The credential's method, when its key cannot be copied to another
    /// device (not backup eligible): possession of it proves a device the
    /// method is bound to.
    pub device_bound_method: Option<String>,
}

/// A credential as shown to people (no key material).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebauthnCredentialView {
    /// The method id (use it with DELETE /users/{username}/methods/{id}).
    pub id: String,
    pub label: String,
    /// security_key or passkey
    pub credential_kind: String,
    pub aaguid: Option<String>,
    /// Authenticator model, known when its attestation was verified.
    pub model: Option<String>,
    pub attested: bool,
    /// Synced (multi-device) credential: may be copied to other devices.
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub sign_count: i64,
    pub registered_at: i64,
    pub last_used_at: Option<i64>,
}

impl From<&WebauthnCredentialRecord> for WebauthnCredentialView {
    fn from(r: &WebauthnCredentialRecord) -> Self {
        Self {
            id: r.method_id.clone(),
            label: r.label.clone(),
            credential_kind: r.kind.clone(),
            aaguid: r.aaguid.clone(),
            model: r.model.clone(),
            attested: r.attested,
            backup_eligible: r.backup_eligible,
            backup_state: r.backup_state,
            sign_count: r.sign_count,
            registered_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// webauthn-rs errors while *finishing* a ceremony: the client's fault (4xx).
fn rejected(e: WebauthnError) -> ServiceError {
    match e {
        WebauthnError::CredentialPossibleCompromise => ServiceError::WebauthnCounterRegression,
        other => ServiceError::WebauthnRejected(other.to_string()),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> ServiceResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ServiceError::InvalidRequest(format!("{what} is not a valid WebAuthn response: {e}")))
}

fn stored<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> ServiceResult<T> {
    serde_json::from_str(s).map_err(|e| ServiceError::Internal(format!("stored {what}: {e}")))
}

fn credential_of(r: &WebauthnCredentialRecord) -> ServiceResult<Credential> {
    stored(&r.credential_json, "WebAuthn credential")
}

fn user_handle(user: &UserRecord) -> ServiceResult<Uuid> {
    Uuid::parse_str(&user.id).map_err(|e| ServiceError::Internal(format!("user id is not a UUID: {e}")))
}

/// The AAGUID the authenticator put in its registration data. Taken from a
/// verified attestation when there is one, else from the authenticator data
/// (parsed by webauthn-rs-core). All zeros means "not disclosed".
fn registration_aaguid(cred: &Credential, reg: &RegisterPublicKeyCredential) -> Option<String> {
    let from_attestation = match &cred.attestation.metadata {
        AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. } => Some(*aaguid),
        _ => None,
    };
    let aaguid = from_attestation.or_else(|| authenticator_data_aaguid(reg))?;
    (!aaguid.is_nil()).then(|| aaguid.hyphenated().to_string())
}

/// The AAGUID in a registration's authenticator data (CBOR attestation
/// object → `authData`, parsed by webauthn-rs-core).
fn authenticator_data_aaguid(reg: &RegisterPublicKeyCredential) -> Option<Uuid> {
    let v: serde_cbor_2::Value = serde_cbor_2::from_slice(&reg.response.attestation_object).ok()?;
    let serde_cbor_2::Value::Map(m) = v else { return None };
    let auth_data = m.iter().find_map(|(k, v)| match (k, v) {
        (serde_cbor_2::Value::Text(k), serde_cbor_2::Value::Bytes(b)) if k == "authData" => Some(b.clone()),
        _ => None,
    })?;
    let ad = webauthn_rs_core::internals::AuthenticatorData::<Registration>::try_from(auth_data.as_slice()).ok()?;
    Some(Uuid::from_bytes(ad.acd?.aaguid))
}

impl App {
    /// The webauthn-rs relying party, built from configuration.
    pub fn webauthn(&self) -> ServiceResult<Webauthn> {
        let rp = self.relying_party()?;
        WebauthnBuilder::new(&rp.id, &rp.origin)
            .map(|b| b.rp_name(&self.config.issuer).allow_any_port(rp.any_port))
            .and_then(|b| b.build())
            .map_err(|e| ServiceError::Internal(format!("WebAuthn relying party '{}' / {}: {e}", rp.id, rp.origin)))
    }

    pub fn relying_party(&self) -> ServiceResult<RelyingParty> {
        relying_party(
            &self.config.public_url,
            self.config.rp_id.as_deref(),
            self.config.rp_origin.as_deref(),
        )
    }

    fn ceremony_hash(&self, id: &str) -> String {
        latchkey_core::secret::keyed_hash(self.keys.pepper(), "webauthn ceremony", id)
    }

    // ---- policy --------------------------------------------------------

    pub async fn webauthn_policy(&self) -> ServiceResult<WebauthnPolicy> {
        match self.store.webauthn_policy_json().await? {
            Some(s) => stored(&s, "WebAuthn policy"),
            None => Ok(WebauthnPolicy::default()),
        }
    }

    pub async fn get_webauthn_policy(&self, p: &Principal) -> ServiceResult<WebauthnPolicy> {
        if !(p.is_admin() || p.has_role(latchkey_core::Role::SecurityAdmin) || p.has_role(latchkey_core::Role::Auditor))
        {
            return Err(ServiceError::Forbidden(
                "reading the WebAuthn policy needs an admin or auditor role".into(),
            ));
        }
        self.webauthn_policy().await
    }

    pub async fn set_webauthn_policy(&self, p: &Principal, policy: WebauthnPolicy) -> ServiceResult<WebauthnPolicy> {
        if !(p.is_admin() || p.has_role(latchkey_core::Role::SecurityAdmin)) {
            return Err(ServiceError::Forbidden(
                "the WebAuthn policy needs the admin or security_admin role".into(),
            ));
        }
        let policy = policy.validated()?;
        // Every root must be a certificate webauthn-rs can use.
        ca_list(&policy, &[])?;
        let mut tx = self.store.write().await?;
        tx.set_webauthn_policy(
            &serde_json::to_string(&policy).expect("policy serialises"),
            &p.actor(),
            self.now(),
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "settings.webauthn.update",
                "settings:webauthn",
                json!({
                    "require_attestation": policy.require_attestation,
                    "privileged_aaguids": policy.privileged_aaguids,
                    "trusted_authenticators": policy.trusted_authenticators.iter()
                        .map(|t| json!({"aaguid": t.aaguid, "description": t.description})).collect::<Vec<_>>(),
                }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }

    // ---- registration --------------------------------------------------

    pub async fn webauthn_credentials(
        &self,
        p: &Principal,
        username: &str,
    ) -> ServiceResult<Vec<WebauthnCredentialRecord>> {
        let user = self.get_user(p, username).await?;
        Ok(self.store.webauthn_credentials(&user.id).await?)
    }

    pub async fn webauthn_register_start(
        &self,
        p: &Principal,
        username: &str,
        kind: CredentialKind,
        label: Option<String>,
    ) -> ServiceResult<RegistrationStart> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let label = crate::app::clean_label(
            label,
            match kind {
                CredentialKind::SecurityKey => "Security key",
                CredentialKind::Passkey => "Passkey",
            },
        )?;
        let policy = self.webauthn_policy().await?;
        let cas = match policy.requirement(user.privileged()) {
            AttestationRequirement::Optional => None,
            AttestationRequirement::Required { aaguids } => Some(ca_list(&policy, &aaguids)?),
        };
        let attested = cas.is_some();
        let webauthn = self.webauthn()?;
        let exclude: Vec<_> = self
            .store
            .webauthn_credentials(&user.id)
            .await?
            .iter()
            .map(|c| credential_of(c).map(|c| c.cred_id))
            .collect::<ServiceResult<_>>()?;
        let handle = user_handle(&user)?;
        let name = &user.username;
        let display = &user.display_name;
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let internal = |e: WebauthnError| ServiceError::Internal(format!("starting WebAuthn registration: {e}"));
        let (mut options, state) = match (kind, cas) {
            (CredentialKind::SecurityKey, cas) => {
                let (o, s) = webauthn
                    .start_securitykey_registration(handle, name, display, exclude, cas, None)
                    .map_err(internal)?;
                (o, RegistrationCeremony::SecurityKey(s))
            }
            (CredentialKind::Passkey, None) => {
                let (o, s) = webauthn
                    .start_passkey_registration(handle, name, display, exclude)
                    .map_err(internal)?;
                (o, RegistrationCeremony::Passkey(s))
            }
            (CredentialKind::Passkey, Some(cas)) => {
                let (o, s) = webauthn
                    .start_attested_passkey_registration(handle, name, display, exclude, cas, None)
                    .map_err(internal)?;
                (o, RegistrationCeremony::AttestedPasskey(s))
            }
        };
        if kind == CredentialKind::SecurityKey {
            // A security key is a second factor after the password and may
            // have no PIN. credProtect "user verification required" would
            // make such a key unusable (browsers refuse the combination), so
            // it is not requested; passkeys keep it.
            if let Some(ext) = options.public_key.extensions.as_mut() {
                ext.cred_protect = None;
            }
        }
        if kind == CredentialKind::Passkey {
            // A passkey must be discoverable so that it can start a sign-in
            // without a username. The option is advice to the client; the
            // library's verification does not depend on it.
            let sel = options
                .public_key
                .authenticator_selection
                .get_or_insert_with(AuthenticatorSelectionCriteria::default);
            sel.resident_key = Some(ResidentKeyRequirement::Required);
            sel.require_resident_key = true;
        }
        let now = self.now();
        let ceremony_id = random_token(&mut OsRng, CEREMONY_PREFIX);
        let expires_at = now + CEREMONY_LIFETIME_SECS;
        let purpose = CeremonyPurpose::Registration {
            kind,
            label: label.clone(),
            attested,
        };
        self.store
            .insert_ceremony(
                &self.ceremony_hash(&ceremony_id),
                &CeremonyRecord {
                    user_id: Some(user.id.clone()),
                    purpose_json: serde_json::to_string(&purpose).expect("purpose serialises"),
                    state_json: serde_json::to_string(&state).expect("state serialises"),
                    expires_at,
                },
                now,
            )
            .await?;
        Ok(RegistrationStart {
            ceremony_id,
            expires_at,
            options,
        })
    }

    pub async fn webauthn_register_finish(
        &self,
        p: &Principal,
        username: &str,
        ceremony_id: &str,
        credential: serde_json::Value,
    ) -> ServiceResult<WebauthnCredentialRecord> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let now = self.now();
        if !ceremony_id.starts_with(CEREMONY_PREFIX) || ceremony_id.len() > 128 {
            return Err(ServiceError::NotFound("WebAuthn registration ceremony".into()));
        }
        // Parse before consuming, so a garbled body does not cost the user
        // their ceremony; everything after this point consumes it.
        let reg: RegisterPublicKeyCredential = parse_json(credential, "credential")?;
        let c = self
            .store
            .take_ceremony(&self.ceremony_hash(ceremony_id))
            .await?
            .filter(|c| c.user_id.as_deref() == Some(user.id.as_str()))
            .ok_or_else(|| ServiceError::NotFound("WebAuthn registration ceremony".into()))?;
        CeremonyState::at(c.expires_at, now).check_finishable()?;
        let purpose: CeremonyPurpose = stored(&c.purpose_json, "ceremony purpose")?;
        let CeremonyPurpose::Registration { kind, label, attested } = purpose else {
            return Err(ServiceError::NotFound("WebAuthn registration ceremony".into()));
        };
        let webauthn = self.webauthn()?;
        let registration_failed = |e: WebauthnError| {
            ServiceError::Unprocessable(format!("the authenticator's registration was rejected: {e}"))
        };
        let cred: Credential = match stored::<RegistrationCeremony>(&c.state_json, "registration state")? {
            RegistrationCeremony::SecurityKey(s) => webauthn
                .finish_securitykey_registration(&reg, &s)
                .map_err(registration_failed)?
                .into(),
            RegistrationCeremony::Passkey(s) => webauthn
                .finish_passkey_registration(&reg, &s)
                .map_err(registration_failed)?
                .into(),
            RegistrationCeremony::AttestedPasskey(s) => webauthn
                .finish_attested_passkey_registration(&reg, &s)
                .map_err(registration_failed)?
                .into(),
        };
        let aaguid = registration_aaguid(&cred, &reg);
        let policy = self.webauthn_policy().await?;
        // The library verified the chain (when attestation was asked for);
        // the domain rule re-checks the model against today's policy.
        policy.check_registration(user.privileged(), if attested { aaguid.as_deref() } else { None })?;
        let model = if attested {
            aaguid.as_deref().and_then(|a| policy.model(a)).map(str::to_owned)
        } else {
            None
        };
        let credential_id = BASE64URL_NOPAD.encode(&cred.cred_id);
        let id = method_id();
        let mut tx = self.store.write().await?;
        tx.insert_method(
            NewMethod {
                id: &id,
                user_id: &user.id,
                kind: MethodKind::Webauthn,
                label: &label,
                state: MethodState::Active,
                secret_sealed: None,
                params: json!({ "credential_kind": kind, "aaguid": aaguid, "model": model, "attested": attested }),
            },
            now,
        )
        .await?;
        tx.insert_webauthn_credential(
            &NewWebauthnCredential {
                method_id: &id,
                user_id: &user.id,
                credential_id: &credential_id,
                kind: kind.as_str(),
                credential_json: &serde_json::to_string(&cred).expect("credential serialises"),
                aaguid: aaguid.as_deref(),
                model: model.as_deref(),
                attested,
                backup_eligible: cred.backup_eligible,
                backup_state: cred.backup_state,
                sign_count: i64::from(cred.counter),
            },
            now,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.add",
                format!("user:{}", user.username),
                json!({
                    "method_id": id, "kind": "webauthn", "credential_kind": kind, "label": label,
                    "aaguid": aaguid, "model": model, "attested": attested,
                    "backup_eligible": cred.backup_eligible, "user_verified": cred.user_verified,
                }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A new sign-in method was added to your account",
            &format!(
                "A {} ('{label}') was registered. If this was not you, call the helpdesk now.",
                match kind {
                    CredentialKind::SecurityKey => "security key",
                    CredentialKind::Passkey => "passkey",
                }
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        self.store
            .webauthn_credentials(&user.id)
            .await?
            .into_iter()
            .find(|c| c.method_id == id)
            .ok_or_else(|| ServiceError::Internal("credential vanished".into()))
    }

    // ---- sign-in -------------------------------------------------------

    /// `POST /signin/{flow}/webauthn/challenge`: assertion options for this
    /// flow. After a password: the user's credentials. Before one: a
    /// discoverable (passkey) challenge that names no credential, so it
    /// reveals nothing about the account.
    pub async fn webauthn_challenge(&self, flow_id: &str) -> ServiceResult<RequestChallengeResponse> {
        let now = self.now();
        let loaded = self.load_flow(flow_id, None).await?;
        let (rec, flow) = (&loaded.rec, &loaded.flow);
        flow.check_allowed(latchkey_core::VerifyMethod::Webauthn, now)?;
        let webauthn = self.webauthn()?;
        let passwordless = flow.methods.is_empty();
        let (options, state) = if passwordless {
            discoverable_challenge(&webauthn)?
        } else {
            let user = loaded.user.as_ref().ok_or(ServiceError::FlowNotFound)?;
            let keys: Vec<SecurityKey> = self
                .store
                .webauthn_credentials(&user.id)
                .await?
                .iter()
                .map(|c| credential_of(c).map(SecurityKey::from))
                .collect::<ServiceResult<_>>()?;
            if keys.is_empty() {
                return Err(ServiceError::InvalidState(
                    "no security key or passkey is registered".into(),
                ));
            }
            let (o, s) = webauthn
                .start_securitykey_authentication(&keys)
                .map_err(|e| ServiceError::Internal(format!("starting WebAuthn authentication: {e}")))?;
            (o, AssertionCeremony::SecondFactor(s))
        };
        self.store
            .insert_ceremony(
                &self.ceremony_hash(flow_id),
                &CeremonyRecord {
                    user_id: rec.user_id.clone(),
                    purpose_json: serde_json::to_string(&CeremonyPurpose::Authentication { passwordless })
                        .expect("purpose serialises"),
                    state_json: serde_json::to_string(&state).expect("state serialises"),
                    expires_at: (now + CEREMONY_LIFETIME_SECS).min(flow.expires_at),
                },
                now,
            )
            .await?;
        Ok(options)
    }

    /// `POST /signin/passkey/start`: a sign-in with no username at all. The
    /// passkey's credential names the user when it is verified.
    pub async fn passkey_signin_start(&self, ctx: &SignInContext) -> ServiceResult<AssertionStart> {
        let now = self.now();
        let flow = SignInFlow::start(now, latchkey_core::AuthStrength::Mfa);
        let mut tx = self.store.bookkeeping().await?;
        let view = self.insert_flow(&mut tx, &flow, "", None, ctx).await?;
        tx.commit_bookkeeping().await?;
        let options = self.webauthn_challenge(&view.flow_id).await?;
        Ok(AssertionStart {
            flow: FlowView {
                allowed_methods: vec![latchkey_core::VerifyMethod::Webauthn],
                ..view
            },
            options,
        })
    }

    /// The WebAuthn arm of `signin_verify`: consume the flow's challenge,
    /// verify the assertion, apply the counter and UV rules.
    pub(crate) async fn check_webauthn_assertion(
        &self,
        flow_id: &str,
        rec: &FlowRecord,
        flow: &SignInFlow,
        assertion: &serde_json::Value,
        now: i64,
    ) -> ServiceResult<AssertionOutcome> {
        let pkc: PublicKeyCredential = parse_json(assertion.clone(), "assertion")?;
        let c = self
            .store
            .take_ceremony(&self.ceremony_hash(flow_id))
            .await?
            .ok_or_else(|| {
                ServiceError::InvalidState(
                    "ask for a WebAuthn challenge first (POST /signin/{flow_id}/webauthn/challenge)".into(),
                )
            })?;
        CeremonyState::at(c.expires_at, now).check_finishable()?;
        let passwordless = flow.methods.is_empty();
        let purpose: CeremonyPurpose = stored(&c.purpose_json, "ceremony purpose")?;
        if purpose != (CeremonyPurpose::Authentication { passwordless }) {
            return Err(ServiceError::InvalidState(
                "the WebAuthn challenge does not match this step; ask for a new one".into(),
            ));
        }
        let credential_id = BASE64URL_NOPAD.encode(pkc.get_credential_id());
        let unknown = || ServiceError::WebauthnRejected("this credential is not registered".into());
        let rec_cred = self
            .store
            .webauthn_credential_by_id(&credential_id)
            .await?
            .ok_or_else(unknown)?;
        // A username-first flow only accepts that user's credentials (and an
        // unknown username none); only a usernameless flow takes any user's.
        let names_user = !rec.username.is_empty();
        if names_user && rec.user_id.as_deref() != Some(rec_cred.user_id.as_str()) {
            return Err(unknown());
        }
        let user = self
            .store
            .user_by_id(&rec_cred.user_id)
            .await?
            .filter(|u| u.state == UserState::Active)
            .ok_or_else(unknown)?;
        if let Some(h) = pkc.get_user_unique_id() {
            if h != user_handle(&user)?.as_bytes() {
                return Err(ServiceError::WebauthnRejected(
                    "the user handle does not match the credential".into(),
                ));
            }
        }
        let mut cred = credential_of(&rec_cred)?;
        let webauthn = self.webauthn()?;
        let result = match stored::<AssertionCeremony>(&c.state_json, "assertion state")? {
            AssertionCeremony::SecondFactor(s) => webauthn.finish_securitykey_authentication(&pkc, &s),
            AssertionCeremony::Discoverable(s) => webauthn.finish_discoverable_authentication_v2(&pkc, s, &cred),
        };
        let result = match result {
            Err(WebauthnError::CredentialPossibleCompromise) => {
                self.counter_regression(&user, &rec_cred, None).await?;
                return Err(ServiceError::WebauthnCounterRegression);
            }
            other => other.map_err(rejected)?,
        };
        let facts = AssertionFacts {
            user_verified: result.user_verified(),
            backup_eligible: result.backup_eligible() || rec_cred.backup_eligible,
        };
        rules::check_assertion(passwordless, &facts)?;
        let presented = result.counter();
        let stored_count = u32::try_from(rec_cred.sign_count).unwrap_or(u32::MAX);
        if let CounterCheck::Regressed { .. } = rules::check_counter(stored_count, presented) {
            self.counter_regression(&user, &rec_cred, Some(presented)).await?;
            return Err(ServiceError::WebauthnCounterRegression);
        }
        cred.counter = cred.counter.max(presented);
        cred.backup_state = result.backup_state();
        cred.backup_eligible |= result.backup_eligible();
        let mut tx = self.store.write().await?;
        if !tx
            .record_webauthn_use(
                &rec_cred.method_id,
                i64::from(presented),
                result.backup_state(),
                &serde_json::to_string(&cred).expect("credential serialises"),
                now,
            )
            .await?
        {
            // Another node accepted this or a later count in the meantime.
            drop(tx);
            self.counter_regression(&user, &rec_cred, Some(presented)).await?;
            return Err(ServiceError::WebauthnCounterRegression);
        }
        tx.audit(
            &AuditEntry::new(
                format!("user:{}", user.username),
                "method.use",
                format!("user:{}", user.username),
                json!({
                    "method_id": rec_cred.method_id, "kind": "webauthn", "credential_kind": rec_cred.kind,
                    "sign_count": presented, "user_verified": facts.user_verified,
                    "backup_state": result.backup_state(), "passwordless": passwordless,
                }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(AssertionOutcome {
            user,
            amr: rules::assertion_amr(&facts),
            device_bound_method: (!facts.backup_eligible).then(|| rec_cred.method_id.clone()),
        })
    }

    async fn counter_regression(
        &self,
        user: &UserRecord,
        cred: &WebauthnCredentialRecord,
        presented: Option<u32>,
    ) -> ServiceResult<()> {
        tracing::warn!(user = %user.username, method = %cred.method_id, "WebAuthn signature counter regression");
        self.store
            .audit_only(
                &AuditEntry::new(
                    "system",
                    "webauthn.counter_regression",
                    format!("user:{}", user.username),
                    json!({
                        "method_id": cred.method_id, "label": cred.label, "aaguid": cred.aaguid,
                        "stored_sign_count": cred.sign_count, "presented_sign_count": presented,
                    }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        Ok(())
    }
}

fn discoverable_challenge(webauthn: &Webauthn) -> ServiceResult<(RequestChallengeResponse, AssertionCeremony)> {
    let (mut o, s) = webauthn
        .start_discoverable_authentication()
        .map_err(|e| ServiceError::Internal(format!("starting passkey authentication: {e}")))?;
    // webauthn-rs marks this for conditional UI (autofill); the client
    // chooses: the JS helper passes mediation itself.
    o.mediation = None;
    Ok((o, AssertionCeremony::Discoverable(s)))
}

/// The attestation roots for the given AAGUIDs (all trusted ones if empty).
fn ca_list(policy: &WebauthnPolicy, aaguids: &[String]) -> ServiceResult<AttestationCaList> {
    let mut b = AttestationCaListBuilder::new();
    for t in &policy.trusted_authenticators {
        if !aaguids.is_empty() && !aaguids.contains(&t.aaguid) {
            continue;
        }
        let aaguid = Uuid::parse_str(&t.aaguid).map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
        b.insert_device_pem(t.ca_pem.as_bytes(), aaguid, t.description.clone(), Default::default())
            .map_err(|e| {
                ServiceError::InvalidRequest(format!(
                    "the CA certificate for {} is not a usable PEM certificate: {e:?}",
                    t.aaguid
                ))
            })?;
    }
    Ok(b.build())
}

/// Entry point for fuzzing what the finish endpoints do with untrusted
/// bytes: JSON → WebAuthn response types → webauthn-rs verification against
/// real ceremony states, plus our own AAGUID extraction. Used by
/// `fuzz/fuzz_targets/webauthn_finish.rs` and the smoke test below. Must
/// never panic, whatever `data` is.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::OnceLock;

    use super::*;
    use webauthn_rs::prelude::PasskeyAuthentication;

    struct Fixture {
        webauthn: Webauthn,
        security_key: SecurityKeyRegistration,
        passkey: PasskeyRegistration,
        discoverable: DiscoverableAuthentication,
        second_factor: SecurityKeyAuthentication,
        passkey_auth: PasskeyAuthentication,
        credential: Credential,
    }

    /// A real stored credential (a YubiKey's, from webauthn-rs-core's tests).
    const CREDENTIAL: &str = r#"{"cred_id":"uZcVDBVS68E_MtAgeQpElJxldF_6cY9sSvbWqx_qRh8wiu42lyRBRmh5yFeD_r9k130dMbFHBHI9RTFgdJQIzQ","cred":{"type_":"ES256","key":{"EC_EC2":{"curve":"SECP256R1","x":[194,126,127,109,252,23,131,21,252,6,223,99,44,254,140,27,230,17,94,5,133,28,104,41,144,69,171,149,161,26,200,243],"y":[143,123,183,156,24,178,21,248,117,159,162,69,171,52,188,252,26,59,6,47,103,92,19,58,117,103,249,0,219,8,95,196]}}},"counter":2,"transports":null,"user_verified":false,"backup_eligible":false,"backup_state":false,"registration_policy":"preferred","extensions":{"cred_protect":"NotRequested","hmac_create_secret":"NotRequested"},"attestation":{"data":"None","metadata":"None"},"attestation_format":"none"}"#;

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let rp = relying_party("http://localhost:8080", None, None).expect("relying party");
            let webauthn = WebauthnBuilder::new(&rp.id, &rp.origin)
                .and_then(|b| b.allow_any_port(true).build())
                .expect("webauthn");
            let user = Uuid::from_u128(1);
            let credential: Credential = serde_json::from_str(CREDENTIAL).expect("credential");
            let (_, security_key) = webauthn
                .start_securitykey_registration(user, "u", "u", None, None, None)
                .expect("start");
            let (_, passkey) = webauthn
                .start_passkey_registration(user, "u", "u", None)
                .expect("start");
            let (_, discoverable) = webauthn.start_discoverable_authentication().expect("start");
            let (_, second_factor) = webauthn
                .start_securitykey_authentication(&[SecurityKey::from(credential.clone())])
                .expect("start");
            let (_, passkey_auth) = webauthn
                .start_passkey_authentication(&[webauthn_rs::prelude::Passkey::from(credential.clone())])
                .expect("start");
            Fixture {
                webauthn,
                security_key,
                passkey,
                discoverable,
                second_factor,
                passkey_auth,
                credential,
            }
        })
    }

    pub fn finish(data: &[u8]) {
        let f = fixture();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        if let Ok(reg) = parse_json::<RegisterPublicKeyCredential>(v.clone(), "credential") {
            let _ = authenticator_data_aaguid(&reg);
            if let Ok(sk) = f.webauthn.finish_securitykey_registration(&reg, &f.security_key) {
                let _ = registration_aaguid(&Credential::from(sk), &reg);
            }
            let _ = f.webauthn.finish_passkey_registration(&reg, &f.passkey);
        }
        if let Ok(a) = parse_json::<PublicKeyCredential>(v, "assertion") {
            let _ = f
                .webauthn
                .finish_discoverable_authentication_v2(&a, f.discoverable.clone(), &f.credential)
                .map_err(rejected);
            let _ = f.webauthn.finish_securitykey_authentication(&a, &f.second_factor);
            let _ = f.webauthn.finish_passkey_authentication(&a, &f.passkey_auth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_comes_from_the_public_url() {
        let rp = relying_party("https://mfa.example.com", None, None).unwrap();
        assert_eq!(rp.id, "mfa.example.com");
        assert_eq!(rp.origin.as_str(), "https://mfa.example.com/");
        assert!(!rp.any_port);
        let rp = relying_party("http://127.0.0.1:8080", None, None).unwrap();
        assert_eq!(rp.id, "localhost");
        assert_eq!(rp.origin.as_str(), "http://localhost:8080/");
        assert!(rp.any_port);
        let rp = relying_party("https://login.example.com", Some("example.com"), None).unwrap();
        assert_eq!(rp.id, "example.com");
    }

    /// The fuzz target's entry point on a few thousand mutated inputs (the
    /// real fuzzer runs with `cargo +nightly fuzz run webauthn_finish`).
    #[test]
    fn finish_parsing_never_panics() {
        use rand::{Rng, SeedableRng};
        let seeds: Vec<Vec<u8>> = vec![
            br#"{"id":"AA","rawId":"AA","type":"public-key","response":{"attestationObject":"o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YVjE","clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0"}}"#.to_vec(),
            br#"{"id":"AA","rawId":"AA","type":"public-key","response":{"authenticatorData":"SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ","clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0","signature":"MEUCIQ","userHandle":"AAAAAAAAAAAAAAAAAAAAAQ"}}"#.to_vec(),
        ];
        const ALPHABET: &[u8] = b"AZaz09-_{}\":,";
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for round in 0..2000 {
            let mut d = seeds[rng.gen_range(0..seeds.len())].clone();
            if round % 2 == 0 {
                // Keep the JSON valid and garble one binary field, so the
                // input reaches CBOR/authenticator-data/signature parsing.
                let mut v: serde_json::Value = serde_json::from_slice(&d).unwrap();
                let resp = v["response"].as_object_mut().unwrap();
                let keys: Vec<String> = resp.keys().cloned().collect();
                let k = &keys[rng.gen_range(0..keys.len())];
                let mut raw = BASE64URL_NOPAD
                    .decode(resp[k].as_str().unwrap().as_bytes())
                    .unwrap_or_default();
                for _ in 0..rng.gen_range(1..6) {
                    match (rng.gen_range(0..3), raw.len()) {
                        (_, 0) | (0, _) => raw.push(rng.gen()),
                        (1, n) => raw.truncate(rng.gen_range(0..n)),
                        (_, n) => raw[rng.gen_range(0..n)] ^= rng.gen::<u8>(),
                    }
                }
                resp.insert(k.clone(), serde_json::Value::String(BASE64URL_NOPAD.encode(&raw)));
                d = serde_json::to_vec(&v).unwrap();
            } else {
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..d.len());
                    match rng.gen_range(0..3) {
                        0 => d[i] = rng.gen(),
                        1 => d.truncate(i.max(1)),
                        _ => d.insert(i, ALPHABET[rng.gen_range(0..ALPHABET.len())]),
                    }
                }
            }
            fuzzing::finish(&d);
        }
    }
}
