//! The one configuration error every layer's `build()` returns.

use std::{borrow::Cow, error::Error, fmt};

/// A builder was given a configuration that makes no sense; the message says which setting and
/// why.
///
/// Every layer of the suite validates its configuration in `build()` and returns this type
/// (re-exported as each crate's `error::ConfigError`).
///
/// ```
/// use tower_fault::ConfigError;
///
/// let err = ConfigError::for_field("retry", "max_attempts", "must be at least 1");
/// assert_eq!(err.layer(), "retry");
/// assert_eq!(err.field(), Some("max_attempts"));
/// assert_eq!(err.to_string(), "invalid retry configuration: `max_attempts` must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    layer: &'static str,
    field: Option<&'static str>,
    message: Cow<'static, str>,
}

impl ConfigError {
    /// An error in the configuration of `layer` (e.g. `"retry"`), explained by `message`.
    pub fn new(layer: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            layer,
            field: None,
            message: message.into(),
        }
    }

    /// Like [`ConfigError::new`], naming the builder setting at fault.
    pub fn for_field(
        layer: &'static str,
        field: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: Some(field),
            ..Self::new(layer, message)
        }
    }

    /// The layer whose configuration is wrong.
    #[must_use]
    pub const fn layer(&self) -> &'static str {
        self.layer
    }

    /// The builder setting at fault, when one is named.
    #[must_use]
    pub const fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// What is wrong, in words.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(
                f,
                "invalid {} configuration: `{field}` {}",
                self.layer, self.message
            ),
            None => write!(f, "invalid {} configuration: {}", self.layer, self.message),
        }
    }
}

impl Error for ConfigError {}
