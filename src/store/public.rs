//! The public insights: fleet figures anyone may read, made k-anonymous here, by the server,
//! whatever the page that shows them.
//!
//! Invariants: every figure published has at least k distinct installs behind it; names with
//! fewer fold into "other", which is itself published only with k installs behind it, and
//! where a published total would give "other" away (total minus the names shown), further
//! names fold in until it holds k installs, or no total is published (complementary
//! suppression); a name that looks like an identifier (a long number, a UUID, a long hex run)
//! is never published; no license, licensee, instance, error message or route appears at all.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use diesel::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::insights::{InstallDay, Period};
use super::schema::*;
use super::{Store, StoreError};

/// The name under which folded figures appear.
pub const OTHER: &str = "other";

/// What the public page shows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PublicInsights {
    pub generated_at: DateTime<Utc>,
    pub period: Period,
    /// k: the fewest distinct installs behind any figure here.
    pub min_installs: u32,
    /// Installs active during the period (`null` when fewer than k).
    pub active_installs: Option<i64>,
    /// The most used API calls, by count.
    pub api_calls: Vec<PublicFigure>,
    /// The most used commands, by count.
    pub commands: Vec<PublicFigure>,
    /// Features, by the share of active installs that use them.
    pub features: Vec<PublicFigure>,
    /// The day the snapshot figures below are of (modules, sizes, versions).
    pub snapshot_day: Option<NaiveDate>,
    /// Modules enabled, by the share of installs reporting an environment.
    pub modules: Vec<PublicFigure>,
    /// Installs per organisation size (user-count range); shares of those reporting.
    pub organisation_sizes: Vec<PublicFigure>,
    /// Installs per software version; shares of the day's active installs.
    pub versions: Vec<PublicFigure>,
    /// Names growing fastest against the period before (k installs in both).
    pub rising: Vec<Rising>,
}

/// One published figure: a name (or [`OTHER`]) with its distinct installs, their share, and
/// for usage a count.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PublicFigure {
    pub name: String,
    pub installs: i64,
    /// Of the list's base (active or reporting installs), to the percent.
    pub share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rising {
    pub kind: String,
    pub name: String,
    /// Growth of the count against the period before, to the percent (0.5 for +50%).
    pub growth: f64,
}

/// One name's figure before suppression.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub installs: i64,
    pub count: i64,
}

/// Whether a name may never be published: it carries something that looks like an
/// identifier (4 digits in a row, or a run of 12 hex digits and dashes holding a digit).
pub fn looks_like_identifier(name: &str) -> bool {
    let mut digits = 0;
    let mut hex_run = 0;
    let mut hex_has_digit = false;
    for c in name.chars() {
        digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
        if digits >= 4 {
            return true;
        }
        if c.is_ascii_hexdigit() || c == '-' {
            hex_run += 1;
            hex_has_digit |= c.is_ascii_digit();
            if hex_run >= 12 && hex_has_digit {
                return true;
            }
        } else {
            hex_run = 0;
            hex_has_digit = false;
        }
    }
    false
}

/// Applies the k rule to a list: names with at least `k` installs (and not identifier-like)
/// are shown; the rest fold into "other", shown only when at least `k` distinct installs are
/// behind it (`union` says how many installs the folded names have together). While "other"
/// falls short and names are shown, the smallest shown name folds in too, so "other" is never
/// left out where a total would reveal it. Returns the shown entries (with "other" last when
/// published) and whether "other" could be published (if not, no total of the list may be).
pub fn fold(
    mut entries: Vec<Entry>,
    k: i64,
    mut union: impl FnMut(&[&str]) -> Result<i64, StoreError>,
) -> Result<(Vec<Entry>, bool), StoreError> {
    entries.sort_by(|a, b| b.installs.cmp(&a.installs).then_with(|| a.name.cmp(&b.name)));
    let (mut shown, mut hidden): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| e.installs >= k && !looks_like_identifier(&e.name) && e.name != OTHER);
    loop {
        if hidden.is_empty() {
            return Ok((shown, true));
        }
        let names: Vec<&str> = hidden.iter().map(|e| e.name.as_str()).collect();
        let installs = union(&names)?;
        if installs >= k {
            let count = hidden.iter().fold(0i64, |sum, e| sum.saturating_add(e.count));
            shown.push(Entry { name: OTHER.to_owned(), installs, count });
            return Ok((shown, true));
        }
        match shown.pop() {
            Some(smallest) => hidden.push(smallest),
            None => return Ok((shown, false)),
        }
    }
}

fn share(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 100.0).round() / 100.0
    }
}

fn figures(entries: Vec<Entry>, base: i64, with_count: bool) -> Vec<PublicFigure> {
    entries
        .into_iter()
        .map(|e| PublicFigure {
            share: share(e.installs, base),
            installs: e.installs,
            count: with_count.then_some(e.count),
            name: e.name,
        })
        .collect()
}

impl Store {
    /// Distinct installs that used any of `names` of `kind` during `period`: the names' daily
    /// reach merged, or a distinct scan where a day was rolled up before reach was kept.
    fn installs_using(&self, kind: &str, period: &Period, names: &[&str]) -> Result<i64, StoreError> {
        let metric = format!("usage.{kind}");
        let mut rows: Vec<super::AggregateRow> = Vec::new();
        for chunk in names.chunks(super::ROWS_PER_STATEMENT) {
            rows.extend(
                telemetry_aggregates::table
                    .filter(telemetry_aggregates::metric.eq(&metric))
                    .filter(telemetry_aggregates::day.ge(period.from))
                    .filter(telemetry_aggregates::day.lt(period.until))
                    .filter(telemetry_aggregates::dimension.eq_any(chunk))
                    .select(super::AggregateRow::as_select())
                    .load(&mut self.conn()?)?,
            );
        }
        if let Some(reach) = super::insights::merged_reach(rows.iter())? {
            return Ok(reach.estimate());
        }
        let mut installs: BTreeSet<(String, String)> = BTreeSet::new();
        for chunk in names.chunks(super::ROWS_PER_STATEMENT) {
            let rows: Vec<(String, String, Option<String>)> = telemetry_features::table
                .filter(telemetry_features::kind.eq(kind))
                .filter(telemetry_features::day.ge(period.from))
                .filter(telemetry_features::day.lt(period.until))
                .filter(telemetry_features::name.eq_any(chunk))
                .select((
                    telemetry_features::license_id,
                    telemetry_features::instance_id,
                    telemetry_features::install_id,
                ))
                .distinct()
                .load(&mut self.conn()?)?;
            installs.extend(
                rows.into_iter().map(|(license, instance, install)| (license, install.unwrap_or(instance))),
            );
        }
        Ok(installs.len() as i64)
    }

    /// The public insights over the `days` days before `now`, k-anonymous for `k`.
    pub fn public_insights(
        &self,
        now: DateTime<Utc>,
        days: u32,
        k: u32,
    ) -> Result<PublicInsights, StoreError> {
        let period = Period::ending(now, days);
        let min = i64::from(k);
        let mut out = PublicInsights {
            // Whole seconds, as every time this server writes.
            generated_at: chrono::DurationRound::duration_trunc(now, Duration::seconds(1)).unwrap_or(now),
            period,
            min_installs: k,
            active_installs: None,
            api_calls: Vec::new(),
            commands: Vec::new(),
            features: Vec::new(),
            snapshot_day: None,
            modules: Vec::new(),
            organisation_sizes: Vec::new(),
            versions: Vec::new(),
            rising: Vec::new(),
        };
        let usage = self.insights_usage(period, "feature")?;
        let active = usage.active_installs;
        if active < min {
            return Ok(out);
        }
        out.active_installs = Some(active);

        // Usage: per name, over the period; no total of a list is published.
        for (kind, list, with_count) in [("api", 0, true), ("command", 1, true), ("feature", 2, false)] {
            let view = if kind == "feature" { usage.clone() } else { self.insights_usage(period, kind)? };
            let previous: HashMap<String, i64> = self
                .insights_usage(period.previous(), kind)?
                .names
                .into_iter()
                .map(|n| (n.name, n.installs))
                .collect();
            let entries: Vec<Entry> = view
                .names
                .iter()
                .map(|n| Entry { name: n.name.clone(), installs: n.installs, count: n.count })
                .collect();
            let (shown, _) = fold(entries, min, |names| self.installs_using(kind, &period, names))?;
            let mut published = figures(shown, active, with_count);
            if with_count {
                published.sort_by(|a, b| {
                    (b.name != OTHER, b.count)
                        .cmp(&(a.name != OTHER, a.count))
                        .then_with(|| a.name.cmp(&b.name))
                });
            }
            match list {
                0 => out.api_calls = published,
                1 => out.commands = published,
                _ => out.features = published,
            }
            for n in &view.names {
                let before = previous.get(&n.name).copied().unwrap_or(0);
                if n.installs >= min
                    && before >= min
                    && n.previous_count > 0
                    && n.count > n.previous_count
                    && !looks_like_identifier(&n.name)
                {
                    let growth = share(n.count - n.previous_count, n.previous_count);
                    out.rising.push(Rising { kind: kind.to_owned(), name: n.name.clone(), growth });
                }
            }
        }
        out.rising.sort_by(|a, b| b.growth.total_cmp(&a.growth).then_with(|| a.name.cmp(&b.name)));
        out.rising.truncate(10);

        // Snapshots of the period's last rolled-up day.
        let day: Option<NaiveDate> = install_days::table
            .filter(install_days::day.ge(period.from))
            .filter(install_days::day.lt(period.until))
            .select(diesel::dsl::max(install_days::day))
            .first(&mut self.conn()?)?;
        let Some(day) = day else { return Ok(out) };
        out.snapshot_day = Some(day);
        let rows: Vec<InstallDay> = install_days::table
            .filter(install_days::day.eq(day))
            .select(InstallDay::as_select())
            .load(&mut self.conn()?)?;
        let reporting: Vec<&InstallDay> = rows.iter().filter(|r| !r.user_count_range.is_empty()).collect();

        // Versions and sizes partition their installs: "other" is the total minus the names
        // shown, so the sum of the folded names stands for the union.
        let partition = |values: Vec<&str>| -> Result<(Vec<PublicFigure>, bool), StoreError> {
            let base = values.len() as i64;
            let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
            for v in values {
                *counts.entry(v).or_default() += 1;
            }
            let entries: Vec<Entry> = counts
                .iter()
                .map(|(name, n)| Entry { name: (*name).to_owned(), installs: *n, count: *n })
                .collect();
            let (shown, whole) = fold(entries, min, |names| {
                Ok(names.iter().map(|n| counts.get(n).copied().unwrap_or(0)).sum())
            })?;
            Ok((figures(shown, base, false), whole))
        };
        if rows.len() as i64 >= min {
            let (versions, _) = partition(rows.iter().map(|r| r.software_version.as_str()).collect())?;
            out.versions = versions;
        }
        if reporting.len() as i64 >= min {
            let (mut sizes, _) = partition(reporting.iter().map(|r| r.user_count_range.as_str()).collect())?;
            let order = crate::protocol::UserCountRange::ALL.map(|r| r.as_str());
            sizes.sort_by_key(|f| order.iter().position(|o| *o == f.name).unwrap_or(order.len()));
            out.organisation_sizes = sizes;

            // Modules: an install may enable several, so "other" counts the installs that
            // enable any folded module.
            let mut by_module: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
            for (i, r) in reporting.iter().enumerate() {
                let modules: BTreeSet<String> = serde_json::from_str(&r.modules).map_err(|source| {
                    StoreError::Corrupt { what: "install_days.modules", source: source.into() }
                })?;
                for m in modules {
                    by_module.entry(m).or_default().insert(i);
                }
            }
            let entries: Vec<Entry> = by_module
                .iter()
                .map(|(name, set)| Entry {
                    name: name.clone(),
                    installs: set.len() as i64,
                    count: set.len() as i64,
                })
                .collect();
            let (shown, _) = fold(entries, min, |names| {
                let union: BTreeSet<usize> =
                    names.iter().filter_map(|n| by_module.get(*n)).flatten().copied().collect();
                Ok(union.len() as i64)
            })?;
            out.modules = figures(shown, reporting.len() as i64, false);
        }
        Ok(out)
    }
}

/// How long a computed page stays fresh.
pub const REFRESH: Duration = Duration::minutes(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, installs: i64) -> Entry {
        Entry { name: name.into(), installs, count: installs * 10 }
    }

    /// Installs as disjoint sets (a partition): the union is the sum.
    fn sum_of(entries: &[Entry]) -> impl FnMut(&[&str]) -> Result<i64, StoreError> + '_ {
        |names| {
            Ok(names.iter().map(|n| entries.iter().find(|e| e.name == *n).map_or(0, |e| e.installs)).sum())
        }
    }

    #[test]
    fn below_k_folds_into_other_which_needs_k_itself() {
        let list = vec![entry("a", 5), entry("b", 3), entry("c", 2), entry("d", 1)];
        // k = 3: a and b shown; c and d (3 installs together) as other.
        let (shown, whole) = fold(list.clone(), 3, sum_of(&list)).unwrap();
        let names: Vec<(&str, i64)> = shown.iter().map(|e| (e.name.as_str(), e.installs)).collect();
        assert_eq!(names, [("a", 5), ("b", 3), ("other", 3)]);
        assert_eq!(shown[2].count, 30);
        assert!(whole);
    }

    #[test]
    fn other_short_of_k_takes_in_the_smallest_shown_name() {
        // k = 3: c alone (2) cannot stand as other; b folds in with it (complementary
        // suppression), so total minus shown reveals no name of fewer than 3 installs.
        let list = vec![entry("a", 5), entry("b", 3), entry("c", 2)];
        let (shown, whole) = fold(list.clone(), 3, sum_of(&list)).unwrap();
        let names: Vec<(&str, i64)> = shown.iter().map(|e| (e.name.as_str(), e.installs)).collect();
        assert_eq!(names, [("a", 5), ("other", 5)]);
        assert!(whole);
    }

    #[test]
    fn when_nothing_can_hide_the_rest_no_total_may_be_published() {
        let list = vec![entry("a", 1)];
        let (shown, whole) = fold(list.clone(), 2, sum_of(&list)).unwrap();
        assert!(shown.is_empty());
        assert!(!whole);
        // k − 1 hidden, k shown.
        let list = vec![entry("a", 2), entry("b", 1), entry("c", 1)];
        let (shown, _) = fold(list.clone(), 2, sum_of(&list)).unwrap();
        assert_eq!(shown.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "other"]);
    }

    #[test]
    fn identifier_like_names_are_never_shown() {
        for name in ["GET /users/12345", "order 5f0c2a9e-11aa", "deadbeef-cafe-1234", "tenant-00001"] {
            assert!(looks_like_identifier(name), "{name}");
        }
        for name in ["export", "GET /users/{id}", "1.4.2", "v2 api", "sso", "oauth2-login"] {
            assert!(!looks_like_identifier(name), "{name}");
        }
        let list = vec![entry("GET /users/12345", 9), entry("GET /a", 9), entry("GET /b", 4)];
        let (shown, _) = fold(list.clone(), 3, sum_of(&list)).unwrap();
        let names: Vec<(&str, i64)> = shown.iter().map(|e| (e.name.as_str(), e.installs)).collect();
        assert_eq!(names, [("GET /a", 9), ("GET /b", 4), ("other", 9)]);
    }
}
