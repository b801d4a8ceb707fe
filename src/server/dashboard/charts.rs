//! The charts, shared with a deployment's local dashboard (`crate::html::charts`).

pub use crate::html::charts::*;
