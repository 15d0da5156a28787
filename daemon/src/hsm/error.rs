//! hsm::error: the one place where cryptoki's vocabulary becomes the daemon's.

use cryptoki::error::{Error as CkError, RvError};

use crate::crypto::SchemeError;

/// What the caller of the HSM layer should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The session, login or token went away; re-open, log in, find the key again, retry.
    Transient,
    /// The request cannot succeed as asked (bad mechanism, bad data); do not retry.
    Rejected,
    /// Misconfiguration or a broken token; an operator must act.
    Fatal,
}

/// Errors of the HSM layer. Messages name tokens and key labels, never PINs or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Module {
        /// Module path.
        module: String,
        /// Why.
        reason: String,
    },
    /// No slot holds a token with this label.
    #[error("token `{0}` is not present")]
    TokenNotPresent(String),
    /// The token name is not configured.
    #[error("token `{0}` is not configured")]
    UnknownToken(String),
    /// The token refused the PIN.
    #[error("token `{0}` refused the PIN")]
    PinIncorrect(String),
    /// The key is not on the token.
    #[error("key `{label}` not found on token `{token}`")]
    KeyNotFound {
        /// Token label.
        token: String,
        /// Key label.
        label: String,
    },
    /// The token does not support what was asked, or the input does not fit the key.
    #[error("the token rejected the operation: {0}")]
    Rejected(String),
    /// The signing request does not fit the key or the scheme (a digest of the wrong length, a
    /// scheme of another key type); refused before the token is asked. The message is
    /// client-safe.
    #[error("invalid signing request: {0}")]
    Scheme(#[from] SchemeError),
    /// The token produced a signature that does not verify (invariant 8): it is never released.
    #[error("signature from key `{0}` failed verification and was withheld")]
    BadSignature(String),
    /// A PKCS#11 call failed; `transient` failures have already been retried once.
    #[error("PKCS#11 {function} failed: {rv}")]
    Pkcs11 {
        /// The PKCS#11 function.
        function: String,
        /// The return value.
        rv: String,
        /// How to treat it.
        class: ErrorClass,
    },
    /// The blocking worker failed (panicked or was cancelled).
    #[error("HSM worker failed: {0}")]
    Worker(String),
}

impl HsmError {
    /// How the caller should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            HsmError::Pkcs11 { class, .. } => *class,
            HsmError::TokenNotPresent(_) | HsmError::KeyNotFound { .. } => ErrorClass::Transient,
            HsmError::Rejected(_) | HsmError::Scheme(_) => ErrorClass::Rejected,
            HsmError::Module { .. }
            | HsmError::UnknownToken(_)
            | HsmError::PinIncorrect(_)
            | HsmError::BadSignature(_)
            | HsmError::Worker(_) => ErrorClass::Fatal,
        }
    }

    /// True when re-opening the session and retrying may help.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HsmError::Module { .. } => "module",
            HsmError::TokenNotPresent(_) => "token_not_present",
            HsmError::UnknownToken(_) => "unknown_token",
            HsmError::PinIncorrect(_) => "pin_incorrect",
            HsmError::KeyNotFound { .. } => "key_not_found",
            HsmError::Rejected(_) => "rejected",
            HsmError::Scheme(_) => "invalid_request",
            HsmError::BadSignature(_) => "bad_signature",
            HsmError::Pkcs11 { class, .. } => match class {
                ErrorClass::Transient => "transient",
                ErrorClass::Rejected => "rejected",
                ErrorClass::Fatal => "fatal",
            },
            HsmError::Worker(_) => "worker",
        }
    }
}

/// Maps every cryptoki error to the daemon's error kinds. `token` names the token for messages.
pub(crate) fn map(err: CkError, token: &str) -> HsmError {
    match err {
        CkError::Pkcs11(rv, function) => {
            let class = match rv {
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::UserNotLoggedIn
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::SessionCount
                | RvError::DeviceMemory
                | RvError::CryptokiNotInitialized => ErrorClass::Transient,
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::KeyTypeInconsistent
                | RvError::KeyFunctionNotPermitted
                | RvError::KeySizeRange
                | RvError::AttributeValueInvalid
                | RvError::TemplateIncomplete
                | RvError::TemplateInconsistent
                | RvError::DomainParamsInvalid
                | RvError::CurveNotSupported => ErrorClass::Rejected,
                RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired => {
                    return HsmError::PinIncorrect(token.to_owned());
                }
                _ => ErrorClass::Fatal,
            };
            HsmError::Pkcs11 {
                function: function.to_string(),
                rv: rv.to_string(),
                class,
            }
        }
        CkError::LibraryLoading(e) => HsmError::Module {
            module: String::new(),
            reason: e.to_string(),
        },
        other => HsmError::Pkcs11 {
            function: "cryptoki".into(),
            rv: other.to_string(),
            class: ErrorClass::Fatal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn session_loss_is_transient_and_bad_input_is_not() {
        let lost = map(
            CkError::Pkcs11(RvError::SessionHandleInvalid, Function::Sign),
            "t",
        );
        assert!(lost.is_transient());
        let logged_out = map(
            CkError::Pkcs11(RvError::UserNotLoggedIn, Function::Sign),
            "t",
        );
        assert!(logged_out.is_transient());
        let bad = map(CkError::Pkcs11(RvError::DataLenRange, Function::Sign), "t");
        assert_eq!(bad.class(), ErrorClass::Rejected);
        let pin = map(CkError::Pkcs11(RvError::PinIncorrect, Function::Login), "t");
        assert!(matches!(pin, HsmError::PinIncorrect(_)));
        assert_eq!(pin.class(), ErrorClass::Fatal);
    }
}
