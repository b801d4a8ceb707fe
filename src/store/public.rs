//! The public insights: fleet figures anyone may read, made safe to publish here, by the
//! server, whatever the page that shows them.
//!
//! Invariants (each enforced by `tests/public_insights.rs`):
//! - **k customers.** Every figure published has at least k distinct *licenses* behind it.
//!   Processes of one license count once, and released processes and developers' machines
//!   (`loopback`) do not count at all, so one license cannot cross k by starting instances.
//! - **Only names the vendor marked public** ([`PublicNames`]); every other name folds into
//!   "other", so text a tenant sent never reaches the page.
//! - **No one dominates.** A figure more than half of whose count comes from one license is not
//!   published (a dominance rule, as statistical offices use); it folds into "other", which is
//!   itself withheld when it fails either rule.
//! - **Whole months, published once.** The page shows the last whole calendar month, computed
//!   the first time it is asked for once the month's last day is rolled up, and then kept as
//!   it was (`public_publications`). Two publications are either identical or cover disjoint
//!   months, so subtracting one from another isolates no one.
//! - **Coarse figures.** Counts are rounded to two significant figures and never more finely
//!   than k; shares are whole percents of the rounded figures. Counts are exact (distinct
//!   licenses, never a sketch's estimate), so k − 1 is never shown as k.

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::insights::Period;
use super::schema::*;
use super::{on_backend, DbConnection, Store, StoreError};

/// The name under which folded figures appear.
pub const OTHER: &str = "other";

/// The kinds of name a vendor can mark public: the usage kinds the page lists, modules and
/// software versions. (Organisation sizes are the protocol's own ranges, never tenant text.)
pub const PUBLIC_KINDS: [&str; 5] = ["api", "command", "feature", "module", "version"];

/// The names the vendor has marked public, as `(kind, name)`.
pub type PublicNames = BTreeSet<(String, String)>;

/// What the public page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicInsights {
    /// When this publication was computed; it is kept as it was from then on.
    pub generated_at: DateTime<Utc>,
    /// The whole calendar month the figures cover.
    pub period: Period,
    /// k: the fewest distinct licenses (customers) behind any figure here.
    pub min_licenses: u32,
    /// Licenses with an install active during the month, rounded (`null` when fewer than k).
    pub active_licenses: Option<i64>,
    /// The most used API calls, by count.
    pub api_calls: Vec<PublicFigure>,
    /// The most used commands, by count.
    pub commands: Vec<PublicFigure>,
    /// Features, by the share of active licenses that use them.
    pub features: Vec<PublicFigure>,
    /// The day the snapshot figures below are of (modules, sizes, versions): the month's last
    /// rolled-up day.
    pub snapshot_day: Option<NaiveDate>,
    /// Modules enabled, by the share of installs reporting an environment.
    pub modules: Vec<PublicFigure>,
    /// Installs per organisation size (user-count range); shares of those reporting.
    pub organisation_sizes: Vec<PublicFigure>,
    /// Installs per software version; shares of the day's installs.
    pub versions: Vec<PublicFigure>,
    /// Published names growing fastest against the month before's publication.
    pub rising: Vec<Rising>,
}

/// One published figure: a name (or [`OTHER`]) with its distinct licenses, its share of the
/// list's base and a count (uses for usage, installs for snapshots), each rounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicFigure {
    pub name: String,
    /// Distinct licenses behind the figure, rounded (at least k).
    pub licenses: i64,
    /// Of the list's base, in whole percent of the rounded figures.
    pub share: i64,
    /// Uses (usage lists) or installs (snapshots), rounded.
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rising {
    pub kind: String,
    pub name: String,
    /// Growth of the published count against the month before's, in whole percent.
    pub growth_percent: i64,
}

/// Rounds a figure for publication: to two significant figures, and never more finely than
/// `k` (so 787 becomes 790 and, with k = 10, 13 becomes 10). A figure of at least k never
/// rounds below k.
pub fn coarse(value: i64, k: i64) -> i64 {
    if value <= 0 {
        return 0;
    }
    let mut step = 1i64;
    while value / step >= 100 {
        step *= 10;
    }
    let step = step.max(k.max(1));
    ((value + step / 2) / step) * step
}

/// Whole percent of `part` in `whole`.
fn percent(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        0
    } else {
        (part * 100 + whole / 2) / whole
    }
}

/// The last whole calendar month whose last day has been rolled up by `now` (the roll-up of a
/// day runs just after it ends, so the month before yesterday's month).
pub fn last_whole_month(now: DateTime<Utc>) -> Period {
    let yesterday = (now - Duration::days(1)).date_naive();
    let this_month = yesterday.with_day(1).expect("every month has a first day");
    let from = (this_month - Duration::days(1)).with_day(1).expect("every month has a first day");
    Period { from, until: this_month, days: (this_month - from).num_days() as u32 }
}

/// The month before `period` (a whole month).
fn month_before(period: &Period) -> Period {
    let until = period.from;
    let from = (until - Duration::days(1)).with_day(1).expect("every month has a first day");
    Period { from, until, days: (until - from).num_days() as u32 }
}

/// What one name gathered from the licenses that used it.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Per license: its count.
    by_license: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, license: &str, count: i64) {
        let c = self.by_license.entry(license.to_owned()).or_default();
        *c = c.saturating_add(count);
    }

    fn total(&self) -> i64 {
        self.by_license.values().fold(0i64, |s, c| s.saturating_add(*c))
    }

    /// Whether it may be published: k licenses, and no license more than half of the count.
    fn publishable(&self, k: i64) -> bool {
        let total = self.total();
        let top = self.by_license.values().copied().max().unwrap_or(0);
        self.by_license.len() as i64 >= k && total > 0 && top.saturating_mul(2) <= total
    }

    fn merge(&mut self, other: &Tally) {
        for (license, count) in &other.by_license {
            self.add(license, *count);
        }
    }
}

/// A list made publishable: the public, publishable names by count, then "other" holding
/// every name left (published only when it is publishable itself). `base` is what shares are
/// of (already rounded); `None` shares by count against the list's own published total.
fn publish_list(
    kind: &str,
    tallies: BTreeMap<String, Tally>,
    public: &PublicNames,
    k: i64,
    base: Option<i64>,
) -> Vec<PublicFigure> {
    let mut shown: Vec<(String, Tally)> = Vec::new();
    let mut other = Tally::default();
    for (name, tally) in tallies {
        if name != OTHER && public.contains(&(kind.to_owned(), name.clone())) && tally.publishable(k) {
            shown.push((name, tally));
        } else {
            other.merge(&tally);
        }
    }
    shown.sort_by_cached_key(|(name, tally)| (std::cmp::Reverse(tally.total()), name.clone()));
    if other.publishable(k) {
        shown.push((OTHER.to_owned(), other));
    }
    shown
        .into_iter()
        .map(|(name, tally)| {
            let licenses = coarse(tally.by_license.len() as i64, k);
            let count = coarse(tally.total(), k);
            PublicFigure { share: base.map_or(0, |b| percent(licenses, b)), name, licenses, count }
        })
        .collect()
}

/// Shares by count within a list (a partition of installs).
fn share_by_count(mut list: Vec<PublicFigure>, base: i64) -> Vec<PublicFigure> {
    for f in &mut list {
        f.share = percent(f.count, base);
    }
    list
}

#[derive(QueryableByName)]
struct UsageRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    license_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct InstallRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    license_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    software_version: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_count_range: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    modules: String,
}

#[derive(QueryableByName)]
struct LicenseRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    license_id: String,
}

/// The condition that a process (`i`) counts: it still holds its row (a released process's row
/// is gone) and it is not a developer's machine.
const COUNTS: &str = "(i.exemption IS NULL OR i.exemption <> 'loopback')";

impl Store {
    /// Per name of `kind`, each license's uses during `period`, from processes that count.
    fn usage_by_license(
        conn: &mut DbConnection,
        kind: &str,
        period: &Period,
    ) -> Result<BTreeMap<String, Tally>, StoreError> {
        let sql = format!(
            "SELECT f.name AS name, f.license_id AS license_id, CAST(SUM(f.count) AS BIGINT) AS count \
             FROM telemetry_features f WHERE f.kind = $1 AND f.day >= $2 AND f.day < $3 \
             AND EXISTS (SELECT 1 FROM instances i WHERE i.id = f.instance_id \
             AND i.license_id = f.license_id AND {COUNTS}) GROUP BY f.name, f.license_id"
        );
        let rows: Vec<UsageRow> = on_backend!(&mut *conn, c => {
            diesel::sql_query(&sql)
                .bind::<diesel::sql_types::Text, _>(kind)
                .bind::<diesel::sql_types::Date, _>(period.from)
                .bind::<diesel::sql_types::Date, _>(period.until)
                .load(c)?
        });
        let mut out: BTreeMap<String, Tally> = BTreeMap::new();
        for r in rows {
            out.entry(r.name).or_default().add(&r.license_id, r.count);
        }
        Ok(out)
    }

    /// The installs of one day whose install still has a process that counts.
    fn installs_of_day(conn: &mut DbConnection, day: NaiveDate) -> Result<Vec<InstallRow>, StoreError> {
        let sql = format!(
            "SELECT d.license_id AS license_id, d.software_version AS software_version, \
             d.user_count_range AS user_count_range, d.modules AS modules FROM install_days d \
             WHERE d.day = $1 AND EXISTS (SELECT 1 FROM instances i WHERE i.license_id = d.license_id \
             AND COALESCE(i.install_id, i.id) = d.install_id AND {COUNTS})"
        );
        Ok(on_backend!(&mut *conn, c => {
            diesel::sql_query(&sql).bind::<diesel::sql_types::Date, _>(day).load(c)?
        }))
    }

    /// Licenses with an install that counts active during `period`.
    fn active_licenses(conn: &mut DbConnection, period: &Period) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT DISTINCT d.license_id AS license_id FROM install_days d \
             WHERE d.day >= $1 AND d.day < $2 AND EXISTS (SELECT 1 FROM instances i \
             WHERE i.license_id = d.license_id AND COALESCE(i.install_id, i.id) = d.install_id AND {COUNTS})"
        );
        let rows: Vec<LicenseRow> = on_backend!(&mut *conn, c => {
            diesel::sql_query(&sql)
                .bind::<diesel::sql_types::Date, _>(period.from)
                .bind::<diesel::sql_types::Date, _>(period.until)
                .load(c)?
        });
        Ok(rows.into_iter().map(|r| r.license_id).collect::<BTreeSet<_>>().len() as i64)
    }

    /// The names marked public in the dashboard.
    pub fn public_names(&self) -> Result<PublicNames, StoreError> {
        let rows: Vec<(String, String)> =
            public_names::table.select((public_names::kind, public_names::name)).load(&mut self.conn()?)?;
        Ok(rows.into_iter().collect())
    }

    /// Marks a name public or not (the dashboard's toggle). Returns whether anything changed.
    pub fn set_public_name(
        &self,
        kind: &str,
        name: &str,
        public: bool,
        now: DateTime<Utc>,
        audit: Option<&super::Audit>,
    ) -> Result<bool, StoreError> {
        self.transaction(|conn| {
            let changed = if public {
                on_backend!(&mut *conn, c => {
                    diesel::insert_into(public_names::table)
                        .values((
                            public_names::kind.eq(kind),
                            public_names::name.eq(name),
                            public_names::marked_at.eq(super::naive(now)),
                        ))
                        .on_conflict_do_nothing()
                        .execute(c)?
                })
            } else {
                diesel::delete(
                    public_names::table
                        .filter(public_names::kind.eq(kind))
                        .filter(public_names::name.eq(name)),
                )
                .execute(conn)?
            };
            // The decision is recorded even when it was already so: the vendor asked for it.
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(changed > 0)
        })
    }

    /// The public insights: the last whole month's publication, computed (and kept) the first
    /// time it is asked for, with the names public then (`configured` and those marked).
    pub fn public_insights(
        &self,
        now: DateTime<Utc>,
        k: u32,
        configured: &PublicNames,
    ) -> Result<PublicInsights, StoreError> {
        let period = last_whole_month(now);
        let before = self.publication(&month_before(&period), now, k, configured, None)?;
        self.publication(&period, now, k, configured, Some(&before))
    }

    /// One month's publication: as kept, or computed now and kept.
    fn publication(
        &self,
        period: &Period,
        now: DateTime<Utc>,
        k: u32,
        configured: &PublicNames,
        before: Option<&PublicInsights>,
    ) -> Result<PublicInsights, StoreError> {
        let kept = |store: &Store| -> Result<Option<PublicInsights>, StoreError> {
            let body: Option<String> = public_publications::table
                .filter(public_publications::period_from.eq(period.from))
                .select(public_publications::body)
                .first(&mut store.conn()?)
                .optional()?;
            body.map(|b| {
                serde_json::from_str(&b).map_err(|source| StoreError::Corrupt {
                    what: "public_publications.body",
                    source: source.into(),
                })
            })
            .transpose()
        };
        if let Some(p) = kept(self)? {
            return Ok(p);
        }
        let mut public = self.public_names()?;
        public.extend(configured.iter().cloned());
        let computed = self.compute_publication(period, now, k, &public, before)?;
        let body = serde_json::to_string(&computed).expect("the figures serialise");
        let mut conn = self.conn()?;
        // Another replica may have kept its own meanwhile: the first kept is the publication.
        on_backend!(&mut *conn, c => {
            diesel::insert_into(public_publications::table)
                .values((
                    public_publications::period_from.eq(period.from),
                    public_publications::body.eq(&body),
                    public_publications::computed_at.eq(super::naive(now)),
                ))
                .on_conflict_do_nothing()
                .execute(c)?
        });
        drop(conn);
        Ok(kept(self)?.unwrap_or(computed))
    }

    fn compute_publication(
        &self,
        period: &Period,
        now: DateTime<Utc>,
        k: u32,
        public: &PublicNames,
        before: Option<&PublicInsights>,
    ) -> Result<PublicInsights, StoreError> {
        let min = i64::from(k);
        let mut out = PublicInsights {
            // Whole seconds, as every time this server writes.
            generated_at: chrono::DurationRound::duration_trunc(now, Duration::seconds(1)).unwrap_or(now),
            period: *period,
            min_licenses: k,
            active_licenses: None,
            api_calls: Vec::new(),
            commands: Vec::new(),
            features: Vec::new(),
            snapshot_day: None,
            modules: Vec::new(),
            organisation_sizes: Vec::new(),
            versions: Vec::new(),
            rising: Vec::new(),
        };
        let mut conn = self.conn()?;
        let active = Self::active_licenses(&mut conn, period)?;
        if active < min {
            return Ok(out);
        }
        let active = coarse(active, min);
        out.active_licenses = Some(active);

        out.api_calls =
            publish_list("api", Self::usage_by_license(&mut conn, "api", period)?, public, min, None);
        out.commands =
            publish_list("command", Self::usage_by_license(&mut conn, "command", period)?, public, min, None);
        // Features: the share of active licenses using each.
        out.features = publish_list(
            "feature",
            Self::usage_by_license(&mut conn, "feature", period)?,
            public,
            min,
            Some(active),
        );
        if let Some(before) = before {
            for (kind, now_list, then_list) in [
                ("api", &out.api_calls, &before.api_calls),
                ("command", &out.commands, &before.commands),
                ("feature", &out.features, &before.features),
            ] {
                for f in now_list.iter().filter(|f| f.name != OTHER) {
                    let Some(then) = then_list.iter().find(|t| t.name == f.name && t.count > 0) else {
                        continue;
                    };
                    if f.count > then.count {
                        out.rising.push(Rising {
                            kind: kind.to_owned(),
                            name: f.name.clone(),
                            growth_percent: percent(f.count - then.count, then.count),
                        });
                    }
                }
            }
            out.rising
                .sort_by(|a, b| b.growth_percent.cmp(&a.growth_percent).then_with(|| a.name.cmp(&b.name)));
            out.rising.truncate(10);
        }

        // Snapshots of the month's last rolled-up day.
        let day: Option<NaiveDate> = install_days::table
            .filter(install_days::day.ge(period.from))
            .filter(install_days::day.lt(period.until))
            .select(diesel::dsl::max(install_days::day))
            .first(&mut conn)?;
        let Some(day) = day else { return Ok(out) };
        out.snapshot_day = Some(day);
        let rows = Self::installs_of_day(&mut conn, day)?;
        let tally_by = |value: &dyn Fn(&InstallRow) -> Vec<String>, rows: &[&InstallRow]| {
            let mut by: BTreeMap<String, Tally> = BTreeMap::new();
            for r in rows {
                for v in value(r) {
                    by.entry(v).or_default().add(&r.license_id, 1);
                }
            }
            by
        };
        let all: Vec<&InstallRow> = rows.iter().collect();
        let versions =
            publish_list("version", tally_by(&|r| vec![r.software_version.clone()], &all), public, min, None);
        out.versions = share_by_count(versions, coarse(all.len() as i64, min));
        let reporting: Vec<&InstallRow> = rows.iter().filter(|r| !r.user_count_range.is_empty()).collect();
        let base = coarse(reporting.len() as i64, min);
        // The ranges are the protocol's own names: all of them may be shown.
        let ranges: PublicNames = crate::protocol::UserCountRange::ALL
            .iter()
            .map(|r| ("size".to_owned(), r.as_str().to_owned()))
            .collect();
        let mut sizes = share_by_count(
            publish_list(
                "size",
                tally_by(&|r| vec![r.user_count_range.clone()], &reporting),
                &ranges,
                min,
                None,
            ),
            base,
        );
        let order = crate::protocol::UserCountRange::ALL.map(|r| r.as_str());
        sizes.sort_by_key(|f| order.iter().position(|o| *o == f.name).unwrap_or(order.len()));
        out.organisation_sizes = sizes;
        let mut modules_of: Vec<(&InstallRow, BTreeSet<String>)> = Vec::new();
        for r in &reporting {
            let modules: BTreeSet<String> = serde_json::from_str(&r.modules).map_err(|source| {
                StoreError::Corrupt { what: "install_days.modules", source: source.into() }
            })?;
            modules_of.push((r, modules));
        }
        let mut by_module: BTreeMap<String, Tally> = BTreeMap::new();
        for (r, modules) in &modules_of {
            for m in modules {
                by_module.entry(m.clone()).or_default().add(&r.license_id, 1);
            }
        }
        out.modules = share_by_count(publish_list("module", by_module, public, min, None), base);
        Ok(out)
    }
}

/// How long a page read from the kept publication stays in memory.
pub const REFRESH: Duration = Duration::minutes(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_figures_have_two_significant_figures_and_steps_of_at_least_k() {
        assert_eq!(coarse(787, 10), 790);
        assert_eq!(coarse(777, 10), 780);
        assert_eq!(coarse(85, 10), 90);
        assert_eq!(coarse(13, 10), 10);
        assert_eq!(coarse(10, 10), 10);
        assert_eq!(coarse(12_345, 10), 12_000);
        assert_eq!(coarse(4, 3), 3);
        assert_eq!(coarse(5, 3), 6);
        assert_eq!(coarse(0, 3), 0);
        for k in 2..30 {
            for v in k..500 {
                assert!(coarse(v, k) >= k, "{v} with k = {k}");
            }
        }
    }

    #[test]
    fn the_last_whole_month_starts_once_its_last_day_is_rolled_up() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let p = last_whole_month(at("2026-12-02T00:00:00Z"));
        assert_eq!((p.from, p.until, p.days), (d("2026-11-01"), d("2026-12-01"), 30));
        let p = last_whole_month(at("2026-12-01T23:59:59Z"));
        assert_eq!((p.from, p.until), (d("2026-10-01"), d("2026-11-01")));
        let p = last_whole_month(at("2027-01-15T12:00:00Z"));
        assert_eq!((p.from, p.until), (d("2026-12-01"), d("2027-01-01")));
        assert_eq!(month_before(&p).from, d("2026-11-01"));
    }

    fn tally(counts: &[(&str, i64)]) -> Tally {
        let mut t = Tally::default();
        for (l, c) in counts {
            t.add(l, *c);
        }
        t
    }

    #[test]
    fn a_figure_needs_k_licenses_and_no_dominant_one() {
        assert!(tally(&[("a", 5), ("b", 5), ("c", 5)]).publishable(3));
        assert!(!tally(&[("a", 5), ("b", 5)]).publishable(3), "k − 1 licenses");
        // One license more than half: withheld, however many licenses stand beside it.
        assert!(!tally(&[("a", 55), ("b", 10), ("c", 10), ("d", 10)]).publishable(3));
        assert!(tally(&[("a", 15), ("b", 5), ("c", 5), ("d", 5)]).publishable(3));
    }

    #[test]
    fn only_public_names_are_shown_the_rest_fold_into_other() {
        let mut tallies = BTreeMap::new();
        tallies.insert("export".to_owned(), tally(&[("a", 10), ("b", 10), ("c", 10)]));
        tallies.insert("Free keys at evil.example".to_owned(), tally(&[("a", 50), ("b", 50), ("c", 50)]));
        tallies.insert("rare".to_owned(), tally(&[("a", 1)]));
        let public: PublicNames = [("feature".to_owned(), "export".to_owned())].into();
        let list = publish_list("feature", tallies, &public, 3, Some(3));
        let names: Vec<(&str, i64, i64)> =
            list.iter().map(|f| (f.name.as_str(), f.licenses, f.count)).collect();
        assert_eq!(names, [("export", 3, 30), ("other", 3, 150)]);
        assert_eq!(list[0].share, 100);
    }
}
