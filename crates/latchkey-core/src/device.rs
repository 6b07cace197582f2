//! Devices and their lifecycle.
//!
//! ```text
//!   Active ──mark lost──▶ Lost       (methods bound to it revoked, its sessions ended)
//!     └────retire───────▶ Retired    (same, planned)
//! ```
//! Lost and retired are terminal: a found phone is registered again, so its
//! old keys never come back.

use serde::{Deserialize, Serialize};

use crate::CoreError;

// One vocabulary for devices and the conditional-access conditions about them.
pub use crate::policy::{Ownership, Platform};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Active,
    Lost,
    Retired,
}

impl DeviceState {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Lost => "lost",
            DeviceState::Retired => "retired",
        }
    }

    /// The only transitions: an active device becomes lost or retired.
    pub fn transition(self, to: DeviceState) -> Result<DeviceState, CoreError> {
        match (self, to) {
            (DeviceState::Active, DeviceState::Lost | DeviceState::Retired) => Ok(to),
            _ => Err(CoreError::InvalidTransition(format!(
                "a device that is {} cannot become {}",
                self.as_str(),
                to.as_str()
            ))),
        }
    }
}

/// How a sign-in proved that it runs on an inventory device. A device id on
/// its own proves nothing (anyone can send one), so a sign-in context holds
/// a device only with one of these, and conditional access sees no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceProof {
    /// A relying party authenticated with a `relying_party`-scoped token
    /// vouched for the device (it checked the device itself).
    VouchedByRelyingParty,
    /// A step of this sign-in verified a key bound to the device (a security
    /// key or passkey registered for it).
    KeyPossession,
    /// Read back from a session: proved (one of the above) when it signed in.
    RecordedAtSignIn,
}

/// A device a sign-in runs on, with how that was proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaim {
    pub id: String,
    pub proof: DeviceProof,
}

impl DeviceClaim {
    /// The device a session recorded when it signed in (only proved ones are).
    pub fn recorded(id: String) -> Self {
        DeviceClaim {
            id,
            proof: DeviceProof::RecordedAtSignIn,
        }
    }
}

pub fn parse_enum<T: serde::de::DeserializeOwned>(s: &str, what: &str, allowed: &str) -> Result<T, CoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| CoreError::InvalidInput(format!("unknown {what} '{s}' ({allowed})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_is_one_way() {
        assert_eq!(
            DeviceState::Active.transition(DeviceState::Lost).unwrap(),
            DeviceState::Lost
        );
        assert!(DeviceState::Lost.transition(DeviceState::Active).is_err());
        assert!(DeviceState::Retired.transition(DeviceState::Lost).is_err());
        assert!(DeviceState::Active.transition(DeviceState::Active).is_err());
    }

    #[test]
    fn parse_values() {
        let p: Platform = parse_enum("iOS", "platform", "ios, android").unwrap();
        assert_eq!(p, Platform::Ios);
        assert!(parse_enum::<Ownership>("rented", "ownership", "byod, corporate").is_err());
    }
}
