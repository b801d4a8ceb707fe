//! The dashboard's sessions: created at sign-in, found by the hash of the cookie's token,
//! ended by sign-out or by time.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::dashboard_sessions;
use super::{naive, Store, StoreError};

/// A dashboard session.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = dashboard_sessions)]
pub struct DashboardSession {
    /// SHA-256 (hex) of the cookie's token; the token itself is never stored.
    pub token_hash: String,
    /// The form token of this session.
    pub csrf: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    /// The name of the admin token that signed in.
    pub token_name: String,
    /// That token's scope (`read` or `full`) at sign-in; each request uses the scope the
    /// token has now.
    pub scope: String,
    /// Proof of which admin token signed in (see `AdminTokens::proof`): a session whose token
    /// was removed or rotated no longer matches and ends.
    pub token_proof: String,
}

impl Store {
    /// Records a new session, with `audit` in the same transaction, and forgets those that have
    /// expired.
    pub fn create_session(
        &self,
        row: &DashboardSession,
        now: DateTime<Utc>,
        audit: Option<&super::Audit>,
    ) -> Result<(), StoreError> {
        self.transaction(|conn| {
            diesel::delete(dashboard_sessions::table.filter(dashboard_sessions::expires_at.le(naive(now))))
                .execute(conn)?;
            diesel::insert_into(dashboard_sessions::table).values(row).execute(conn)?;
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(())
        })
    }

    /// The session whose token hashes to `token_hash`, if it exists and has not expired at `now`.
    pub fn session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DashboardSession>, StoreError> {
        Ok(dashboard_sessions::table
            .find(token_hash)
            .filter(dashboard_sessions::expires_at.gt(naive(now)))
            .select(DashboardSession::as_select())
            .first(&mut self.conn()?)
            .optional()?)
    }

    /// Ends every session (sign out everywhere), with `audit` in the same transaction; how many
    /// there were.
    pub fn end_all_sessions(&self, audit: Option<&super::Audit>) -> Result<usize, StoreError> {
        self.transaction(|conn| {
            let ended = diesel::delete(dashboard_sessions::table).execute(conn)?;
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(ended)
        })
    }

    /// Ends a session (sign-out), with `audit` in the same transaction when there was one;
    /// false when there was none.
    pub fn end_session(&self, token_hash: &str, audit: Option<&super::Audit>) -> Result<bool, StoreError> {
        self.transaction(|conn| {
            let ended = diesel::delete(dashboard_sessions::table.find(token_hash)).execute(conn)? == 1;
            if ended {
                super::audit::write(conn, audit)?;
            }
            Ok::<_, StoreError>(ended)
        })
    }
}
