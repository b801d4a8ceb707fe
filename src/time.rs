//! Wire form of instants: RFC 3339 in UTC, whole seconds, with a `Z` suffix.
//!
//! Every time in a token payload and in the protocol goes through here, so that the bytes a
//! vendor signs are the same whatever the platform's default formatting.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;
use std::sync::Arc;

/// Where "now" comes from: the system clock, or a test's. The server and the client both take
/// one, so no module under test reads the system clock behind its back.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Formats an instant as the protocol writes it, e.g. `2026-11-21T10:00:00Z`: whole seconds,
/// any fraction dropped (an instant is never rounded up past itself).
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 instant (any offset) into UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Reads a string instant without copying it (this sits on the verification hot path).
struct InstantVisitor;

impl Visitor<'_> for InstantVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 time such as 2026-11-21T10:00:00Z")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        parse(s).map_err(|e| E::custom(format_args!("bad RFC 3339 time {s:?}: {e}")))
    }
}

/// `#[serde(with = "crate::time::rfc3339")]` for a required instant.
pub mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(InstantVisitor)
    }
}

/// `#[serde(with = "crate::time::rfc3339_nullable")]` for an instant that must be present but
/// may be `null`. Unlike a plain `Option`, a missing field is an error, so that "never expires"
/// is always something the signer wrote on purpose.
pub mod rfc3339_nullable {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(NullableVisitor)
    }

    struct NullableVisitor;

    impl<'de> Visitor<'de> for NullableVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(InstantVisitor).map(Some)
        }
    }
}
