//! The writer: one thread that decides and records check-ins, a group at a time, in one
//! transaction per group (group commit).
//!
//! Every check-in waiting when a transaction starts joins it; under load, the queue fills
//! while the previous group commits, so groups grow with the load by themselves and nothing
//! waits on a timer. A group costs about ten statements and one commit whatever its size,
//! where one check-in alone used to cost sixteen statements and a commit of its own.
//!
//! Decisions are made one check-in at a time, in arrival order, against the database as read
//! at the start of the group plus what earlier check-ins of the group changed: seat counts and
//! duplicate batch ids stay exact inside a group as across groups. Across replicas, the license
//! rows are locked in id order at the start, so two replicas' groups serialise (without
//! deadlock) wherever they share a license. A group that fails fails every check-in in it;
//! clients retry, and batch ids keep retries from counting twice.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::sync::{mpsc, oneshot};

use super::{
    bad, decide, times_for, BadRequest, CheckInError, Decision, ImportLink, Outcome, Place, Prepared, Ruling,
    SeatRules, Subject, Terms,
};
use crate::error_chain::Chain;
use crate::license::LicensePayload;
use crate::protocol::CheckInStatus;
use crate::protocol::TelemetryExemption;
use crate::store::{self, InstallKeyRow, InstanceRow, NewCheckIn, Store};

/// The most check-ins one transaction records.
const MAX_GROUP: usize = 256;
/// The most check-ins waiting for the writer; past that, submitters wait for room.
const MAX_QUEUE: usize = 4096;

struct Job {
    prepared: Prepared,
    reply: oneshot::Sender<(Prepared, Result<Outcome, CheckInError>)>,
}

/// The handle through which check-ins reach the writer threads.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

type Metrics = std::sync::Arc<crate::metrics::Metrics>;
type Rules = std::sync::Arc<SeatRules>;

impl Writer {
    /// Starts `threads` writer threads sharing one queue; they end when the last handle is
    /// dropped. Several writers keep PostgreSQL busy while one of them waits on a commit;
    /// SQLite has a single write lock, so one writer is all it can use.
    pub fn start(store: Store, threads: usize, metrics: Metrics, rules: Rules) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>(MAX_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..threads.max(1) {
            let (store, rx, metrics, rules) = (store.clone(), rx.clone(), metrics.clone(), rules.clone());
            std::thread::Builder::new()
                .name(format!("licensor-writer-{n}"))
                .spawn(move || writer_loop(&store, &rx, &metrics, &rules))
                .expect("a writer thread starts");
        }
        Writer { tx }
    }

    /// Queues a check-in and waits for its decision.
    pub async fn submit(&self, prepared: Prepared) -> Result<(Prepared, Outcome), CheckInError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || CheckInError::WriterStopped;
        self.tx.send(Job { prepared, reply }).await.map_err(|_| stopped())?;
        let (prepared, decision) = answer.await.map_err(|_| stopped())?;
        Ok((prepared, decision?))
    }
}

/// Takes whatever is queued (one group), records it, answers, and again, until the queue
/// closes. The queue's lock is held only while taking a group, never while writing one.
fn writer_loop(
    store: &Store,
    rx: &std::sync::Mutex<mpsc::Receiver<Job>>,
    metrics: &Metrics,
    rules: &SeatRules,
) {
    loop {
        let jobs = {
            let mut rx = rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(first) = rx.blocking_recv() else { return };
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            metrics.queue_depth.set(rx.len() as i64);
            jobs
        };
        metrics.group_size.observe(jobs.len() as f64);
        let (prepared, replies): (Vec<Prepared>, Vec<_>) =
            jobs.into_iter().map(|j| (j.prepared, j.reply)).unzip();
        let outcomes = write_isolating(store, rules, &prepared);
        for outcome in &outcomes {
            let failure = match outcome {
                Err(CheckInError::Unavailable(_)) => "unavailable",
                Err(CheckInError::Refused(_)) => "refused",
                Err(CheckInError::Panicked | CheckInError::Invariant(_)) => "panicked",
                _ => continue,
            };
            metrics.check_in_failures.get_or_create(&[("cause", failure)]).inc();
        }
        for ((p, reply), outcome) in prepared.into_iter().zip(replies).zip(outcomes) {
            let _ = reply.send((p, outcome));
        }
    }
}

/// Records a group in one transaction. Should the database refuse it (a value one check-in
/// carries that validation let through, a constraint, a bug), the group is split in halves and
/// each half written in a transaction of its own, down to single check-ins: the check-in at
/// fault fails alone, and every other one is recorded. The halves are written in order, so
/// decisions are still those of arrival order. One bad tenant costs about 2·log2(group)
/// transactions, never the group's success. A database that cannot be reached fails the group
/// at once: splitting would only multiply the failures.
fn write_isolating(
    store: &Store,
    rules: &SeatRules,
    group: &[Prepared],
) -> Vec<Result<Outcome, CheckInError>> {
    match write_guarded(store, rules, group) {
        Ok(decisions) => decisions.into_iter().map(Ok).collect(),
        Err(e) if group.len() > 1 && caused_by_content(&e) => {
            let (first, second) = group.split_at(group.len() / 2);
            let mut outcomes = write_isolating(store, rules, first);
            outcomes.extend(write_isolating(store, rules, second));
            outcomes
        }
        Err(e) => {
            if group.len() == 1 && caused_by_content(&e) {
                tracing::error!(error = %Chain(&e), instance_id = %group[0].instance_id, "the database refused one check-in");
            } else {
                tracing::error!(error = %Chain(&e), checkins = group.len(), "recording a group of check-ins failed");
            }
            // Each check-in of the group gets the same answer: a failure that retrying can cure
            // (503), or one that it cannot (500). A panic or a broken invariant was narrowed
            // down to its own check-in before it got here.
            let store = match e {
                CheckInError::Store(e) => std::sync::Arc::new(e),
                CheckInError::Invariant(what) => {
                    return group.iter().map(|_| Err(CheckInError::Invariant(what))).collect()
                }
                _ => return group.iter().map(|_| Err(CheckInError::Panicked)).collect(),
            };
            let transient = group.len() > 1 || store.is_transient();
            group
                .iter()
                .map(|_| {
                    Err(if transient {
                        CheckInError::Unavailable(store.clone())
                    } else {
                        CheckInError::Refused(store.clone())
                    })
                })
                .collect()
        }
    }
}

/// [`write_group`], with a panic turned into an error: a bug that one check-in triggers must
/// not stop the writer for every later one.
fn write_guarded(store: &Store, rules: &SeatRules, group: &[Prepared]) -> Result<Vec<Outcome>, CheckInError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_group(store, rules, group)))
        .unwrap_or_else(|_| Err(CheckInError::Panicked))
}

/// Whether a failure may come from what one check-in carried (so that writing the group in
/// parts can isolate it), rather than from the database being unreachable.
fn caused_by_content(e: &CheckInError) -> bool {
    match e {
        CheckInError::Panicked | CheckInError::Invariant(_) => true,
        CheckInError::Store(e) => e.may_come_from_content(),
        _ => false,
    }
}

/// Decides and records a group of check-ins in one transaction.
fn write_group(store: &Store, rules: &SeatRules, group: &[Prepared]) -> Result<Vec<Outcome>, CheckInError> {
    store.write_check_ins(|tx| {
        // Imported reports whose chain refuses them are set aside before anything is written,
        // so that nothing of them is: not even their license's last check-in time.
        let mut chains = ImportChains::read(tx, group)?;
        let refused: Vec<Option<BadRequest>> = group.iter().map(|p| chains.refusal(p)).collect();
        // Licenses first: the upsert takes their locks, in id order (a BTreeMap's order).
        let mut license_rows: BTreeMap<String, store::LicenseRow> = BTreeMap::new();
        // Instances are keyed by license and id: the same id under another license is another
        // instance, which this check-in cannot touch.
        let mut instance_keys: BTreeSet<(String, &str)> = BTreeSet::new();
        let mut earliest: Option<DateTime<Utc>> = None;
        for (p, _) in group.iter().zip(&refused).filter(|(_, r)| r.is_none()) {
            if let Subject::Licensed(license) = &p.subject {
                let mut row = store::LicenseRow::new(license, Some(&p.license_key), p.now);
                row.last_check_in_at = Some(store::naive(p.now));
                // Two check-ins of one license may present two of its keys: the row carries
                // the newer one (the upsert keeps the newest of the row's and this).
                license_rows
                    .entry(row.id.clone())
                    .and_modify(|r| {
                        let last = r.last_check_in_at.max(row.last_check_in_at);
                        if row.issued_at > r.issued_at {
                            *r = row.clone();
                        }
                        r.last_check_in_at = last;
                    })
                    .or_insert(row);
                instance_keys.insert((license.license_id.to_string(), &p.instance_id));
                earliest = Some(earliest.map_or(p.now, |e| e.min(p.now)));
            }
        }
        let rows: Vec<store::LicenseRow> = license_rows.into_values().collect();
        let licenses: HashMap<String, store::LicenseRow> =
            tx.upsert_licenses(&rows)?.into_iter().map(|r| (r.id.clone(), r)).collect();
        let keys: Vec<(&str, &str)> = instance_keys.iter().map(|(l, i)| (l.as_str(), *i)).collect();
        let mut instances: HashMap<(String, String), InstanceRow> = tx
            .instances_by_key(&keys)?
            .into_iter()
            .map(|i| ((i.license_id.clone(), i.id.clone()), i))
            .collect();
        // The processes holding a place for each install the group names, merged into the
        // view of instances: seats count installs, and a newcomer may replace one of them.
        // A process that is its own install is found by its key, and only shared installs are
        // looked up by install id.
        let mut installs: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        for row in instances.values() {
            installs.entry((row.license_id.clone(), row.install().to_owned())).or_default().insert(row.id.clone());
        }
        if let Some(t) = earliest {
            let install_keys: BTreeSet<(String, String)> = group
                .iter()
                .filter_map(|p| match (&p.subject, shared_install(p)) {
                    (Subject::Licensed(l), Some(install)) => Some((l.license_id.to_string(), install.to_owned())),
                    _ => None,
                })
                .collect();
            let keys: Vec<(&str, &str)> = install_keys.iter().map(|(l, i)| (l.as_str(), i.as_str())).collect();
            for process in tx.install_processes(&keys, store::naive(t))? {
                installs
                    .entry((process.license_id.clone(), process.install().to_owned()))
                    .or_default()
                    .insert(process.id.clone());
                instances.entry((process.license_id.clone(), process.id.clone())).or_insert(process);
            }
        }
        // Places in use are counted only for the licenses that need the count: those with a
        // check-in whose install holds no place of its kind yet (a newcomer). A process of an
        // install that holds one, the common case, is never judged by the count, and counting
        // a license's places reads every live process of it. Counted at the group's earliest
        // instant: a seat that ends within the few milliseconds a group spans still counts,
        // which errs on the side of the limit. `changed` keeps the group's own changes.
        let counted_at = earliest.map(store::naive).unwrap_or_default();
        // The group's check-ins that will be judged, each with its license's stored row.
        let judged = || {
            group.iter().zip(&refused).filter(|(_, r)| r.is_none()).filter_map(|(p, _)| match &p.subject {
                Subject::Licensed(l) => licenses.get(&l.license_id.to_string()).map(|row| (p, row)),
                _ => None,
            })
        };
        let newcomers: BTreeSet<&str> = judged()
            .filter_map(|(p, row)| {
                let license_id = row.id.as_str();
                let install = shared_install(p).unwrap_or(&p.instance_id).to_owned();
                let held = holding(&installs, &instances, &(license_id.to_owned(), install), counted_at);
                let loopback = p.exemption == Some(TelemetryExemption::Loopback);
                (!(if loopback { held.1 } else { held.0 })).then_some(license_id)
            })
            .collect();
        let mut in_use: HashMap<String, store::SeatsInUse> = if newcomers.is_empty() {
            HashMap::new()
        } else {
            let ids: Vec<&str> = newcomers.into_iter().collect();
            let mut counted: HashMap<String, store::SeatsInUse> =
                ids.iter().map(|id| ((*id).to_owned(), store::SeatsInUse::default())).collect();
            counted.extend(tx.seats_in_use(&ids, counted_at)?);
            counted
        };
        let mut changed: HashMap<String, store::SeatsInUse> = HashMap::new();
        // A license's own terms are read only where a check-in can be judged by them (see
        // `needs_terms`): a process that holds its place, the common case, and a new process
        // that is its own install within the seats never are, and reading every license's
        // terms cost a statement per group. Those surely needed are read here in one
        // statement; a newcomer found past the seats in the loop reads its license's then.
        let mut terms: HashMap<String, Option<store::LicenseTerms>> = HashMap::new();
        let wanted: BTreeSet<&str> = judged()
            .filter_map(|(p, row)| {
                let held = instances
                    .get(&(row.id.clone(), p.instance_id.clone()))
                    .and_then(|i| i.seat_until)
                    .filter(|until| *until > counted_at);
                needs_terms(p, held.is_some(), false).then_some(row.id.as_str())
            })
            .collect();
        if !wanted.is_empty() {
            let ids: Vec<&str> = wanted.into_iter().collect();
            terms.extend(ids.iter().map(|id| ((*id).to_owned(), None)));
            for t in tx.license_terms(&ids)? {
                terms.insert(t.license_id.clone(), Some(t));
            }
        }

        let mut decisions = Vec::with_capacity(group.len());
        let mut check_ins = Vec::with_capacity(group.len());
        let mut batches = Vec::new();
        let mut batch_ids_seen = BTreeSet::new();
        let mut touched = BTreeSet::new();
        let mut deleted: Vec<(String, String)> = Vec::new();
        let mut events = Vec::new();
        let mut pins = Vec::new();
        for (i, p) in group.iter().enumerate() {
            if let Some(refusal) = &refused[i] {
                decisions.push(Outcome::Refused(refusal.clone()));
                continue;
            }
            // Keys that cannot be read or trusted never reach the writer (see `record`).
            let Subject::Licensed(license) = &p.subject else {
                return Err(CheckInError::Invariant("an unlicensed check-in reached the writer"));
            };
            let row = &licenses[&license.license_id.to_string()];
            let license_id = &row.id;
            // The server keeps each license's newest key: an instance presenting an older one
            // is judged under the newest and is handed it.
            let newest = newest_key(license, &p.license_key, row)?;
            let license = newest.as_ref().map_or(license, |(payload, _)| payload);
            let now = store::naive(p.now);
            let key = (license_id.clone(), p.instance_id.clone());
            let shared = shared_install(p);
            let install_id = shared.unwrap_or(&p.instance_id).to_owned();
            let ikey = (license_id.clone(), install_id.clone());
            let previous = instances.get(&key);
            // A process released in favour of a newer one of its install is told so once; its row
            // goes, so that, restarted, it comes back as a new process.
            if previous.is_some_and(|inst| inst.last_status == REPLACED) {
                instances.remove(&key);
                touched.remove(&key);
                deleted.push(key.clone());
                let times = times_for(license, CheckInStatus::Replaced, None, false, p.now);
                check_ins.push(check_in_row(p, Some(license_id.clone()), CheckInStatus::Replaced, None));
                decisions.push(Outcome::Decided(Decision {
                    status: CheckInStatus::Replaced,
                    message: "This process was released in favour of a newer process of its install (more ran at once \
                              than the license allows); restart it to run again."
                        .into(),
                    next_check_in_at: times.next_check_in_at,
                    valid_until: times.valid_until,
                    duplicate: false,
                    renewal: None,
                    notice: None,
                }));
                continue;
            }
            let held = previous.and_then(|inst| inst.seat_until).filter(|until| *until > now);
            let was_loopback = previous.is_some_and(InstanceRow::is_loopback);
            // A loopback install (a developer's machine) holds a place of its own kind, never a
            // seat; one that stops declaring it (it serves public hosts) needs a seat. Seats
            // count installs: a process whose install holds a seat shares it.
            let loopback = p.exemption == Some(TelemetryExemption::Loopback);
            let before = holding(&installs, &instances, &ikey, now);
            let holds = if loopback { before.1 } else { before.0 };
            // Only a check-in that needs a place is judged by how many others hold one.
            let held_by_others = if holds {
                0
            } else {
                if !in_use.contains_key(license_id) {
                    // Its install lost its place earlier in this group: counted now.
                    let counted = tx.seats_in_use(&[license_id.as_str()], counted_at)?;
                    in_use.insert(license_id.clone(), counted.into_iter().next().map(|c| c.1).unwrap_or_default());
                }
                let (base, delta) = (in_use[license_id], changed.get(license_id).copied().unwrap_or_default());
                if loopback {
                    base.loopback + delta.loopback
                } else {
                    base.seats + delta.seats
                }
            };
            let place = Place { exemption: p.exemption, holds, held_by_others };
            let past_seats = !holds && held_by_others >= i64::from(license.seats);
            if needs_terms(p, held.is_some(), past_seats) && !terms.contains_key(license_id) {
                let own = tx.license_terms(&[license_id.as_str()])?.into_iter().next();
                terms.insert(license_id.clone(), own);
            }
            // Where they are not needed, the server's rules stand in: nothing reads them then.
            let license_terms = Terms::of(rules, license.tier, terms.get(license_id).and_then(Option::as_ref));
            let mut ruling = decide(license, row, &license_terms, &place, p.telemetry.is_some(), p.now);
            // One install id shared by a whole fleet is not one install: past the license's
            // machines per install, a newcomer on a further machine is refused (a process that
            // holds its place already, or another on a machine the install runs on, is not).
            let machine = p.install.as_ref().and_then(|i| i.machine.as_deref());
            if let (CheckInStatus::Valid, None, false, Some(max), Some(machine)) =
                (ruling.status, held, loopback, license_terms.max_machines, machine)
            {
                let machines: BTreeSet<&str> = live(&installs, &instances, &ikey, now)
                    .filter(|r| r.id != p.instance_id && !r.is_loopback())
                    .filter_map(|r| r.machine.as_deref())
                    .collect();
                if !machines.contains(machine) && machines.len() >= max {
                    ruling = Ruling {
                        status: CheckInStatus::SeatLimitExceeded,
                        message: format!(
                            "This install already runs on {} machine(s), the most its license allows; give each \
                             deployment its own LICENSOR_INSTALL_ID, or release one with `licensor installs release`.",
                            machines.len()
                        ),
                        notice: None,
                        starts_overage: false,
                    };
                }
            }
            let status = ruling.status;
            let message = ruling.message;
            let own_held = held.filter(|_| was_loopback == loopback);
            let times = times_for(license, status, own_held.map(store::utc), loopback, p.now);
            let seat_until = match status {
                CheckInStatus::Valid => Some(store::naive(times.valid_until)),
                // The lease is not extended, but a place already held stays held.
                CheckInStatus::TelemetryRequired | CheckInStatus::SeatLimitExceeded => held,
                _ => None,
            };
            // The row keeps its kind while it keeps a place it already held and was refused.
            let stored_loopback =
                if seat_until.is_some() && seat_until == held && status != CheckInStatus::Valid {
                    was_loopback
                } else {
                    loopback
                };
            if ruling.starts_overage {
                tx.start_overage(license_id, now)?;
                terms
                    .entry(license_id.clone())
                    .or_default()
                    .get_or_insert_with(|| store::LicenseTerms { license_id: license_id.clone(), ..Default::default() })
                    .overage_started_at
                    .get_or_insert(now);
                events.push(store::NewEvent::new(
                    "seat_overage.started",
                    serde_json::json!({
                        "license_id": license_id, "seats": row.seats, "in_use": place.held_by_others + 1,
                        "overage_days": rules.overage_days, "instance_id": p.instance_id,
                    }),
                    p.now,
                    Some(format!("evt_overage_{}_{}", license_id, p.now.format("%Y%m%d"))),
                ));
            }
            match status {
                // An install that gains a seat (new, or back after its lease lapsed).
                CheckInStatus::Valid if !holds && !loopback => events.push(store::NewEvent::new(
                    "instance.activated",
                    serde_json::json!({
                        "license_id": license_id, "instance_id": p.instance_id, "install_id": install_id,
                        "software_version": p.software_version, "first": previous.is_none(),
                    }),
                    p.now,
                    None,
                )),
                // Once per license and day however many instances are refused: the event's id
                // says which day, and an event is enqueued once.
                CheckInStatus::SeatLimitExceeded if !loopback => events.push(store::NewEvent::new(
                    "seat_limit.reached",
                    serde_json::json!({
                        "license_id": license_id, "seats": row.seats, "refused_instance_id": p.instance_id,
                    }),
                    p.now,
                    Some(format!("evt_seats_{}_{}", license_id, p.now.format("%Y%m%d"))),
                )),
                _ => {}
            }
            let first_seen_at = previous.map_or(now, |inst| inst.first_seen_at);
            // An instance comes into being only when it is granted a seat: a refused newcomer
            // (no seat, no telemetry, revoked...) leaves its check-in in the history, which
            // the per-license rate limit bounds and retention ages out, and nothing else.
            if previous.is_some() || status == CheckInStatus::Valid {
                // Over the install's process limit, the newest wins: the process of the same
                // kind seen least recently is released, and told so at its next check-in.
                if status == CheckInStatus::Valid && held.is_none() {
                    let mut others: Vec<&InstanceRow> = live(&installs, &instances, &ikey, now)
                        .filter(|r| r.id != p.instance_id && r.is_loopback() == loopback)
                        .collect();
                    if others.len() >= license_terms.max_processes {
                        others.sort_by(|a, b| (a.last_check_in_at, &a.id).cmp(&(b.last_check_in_at, &b.id)));
                        let mut oldest = others[0].clone();
                        oldest.seat_until = None;
                        oldest.last_status = REPLACED.to_owned();
                        events.push(store::NewEvent::new(
                            "instance.released",
                            serde_json::json!({
                                "license_id": license_id, "instance_id": oldest.id, "install_id": install_id,
                                "by": "replaced",
                            }),
                            p.now,
                            None,
                        ));
                        let oldest_key = (license_id.clone(), oldest.id.clone());
                        instances.insert(oldest_key.clone(), oldest);
                        touched.insert(oldest_key);
                    }
                }
                instances.insert(
                    key.clone(),
                    InstanceRow {
                        id: p.instance_id.clone(),
                        license_id: license_id.clone(),
                        software_version: p.software_version.clone(),
                        first_seen_at,
                        last_check_in_at: now,
                        last_status: status.as_str().to_owned(),
                        seat_until,
                        exemption: if stored_loopback {
                            Some(store::LOOPBACK.to_owned())
                        } else {
                            p.exemption.filter(|e| e.holds_seat()).map(|e| e.as_str().to_owned())
                        },
                        install_id: shared.map(str::to_owned),
                        install_source: p.install.as_ref().map(|i| i.source.as_str().to_owned()),
                        machine: p.install.as_ref().and_then(|i| i.machine.clone()),
                    },
                );
                installs.entry(ikey.clone()).or_default().insert(p.instance_id.clone());
                touched.insert(key);
            }
            // Keep the group's view of places in use right for the check-ins after this one:
            // an install counts once, while any of its processes holds a place of that kind.
            let after = holding(&installs, &instances, &ikey, now);
            let counts = changed.entry(license_id.clone()).or_default();
            counts.seats += i64::from(after.0) - i64::from(before.0);
            counts.loopback += i64::from(after.1) - i64::from(before.1);

            let mut decision = Decision {
                status,
                message,
                next_check_in_at: times.next_check_in_at,
                valid_until: times.valid_until,
                duplicate: false,
                // A revoked license gets no key: revocation wins over any key.
                renewal: newest.filter(|_| status != CheckInStatus::Revoked).map(|(_, key)| key),
                notice: ruling.notice,
            };
            // An imported report moves its install's chain on only when its batch is accepted;
            // otherwise it stays the next report due, to be imported again.
            if let (CheckInStatus::Valid, Some(link)) = (status, &p.import) {
                pins.push(chains.moved_on(license_id, &p.instance_id, link, now));
            }
            let mut batch_id = None;
            if let (CheckInStatus::Valid, Some(t)) = (status, &p.telemetry) {
                batch_id = Some(t.batch_id.to_string());
                match &t.stored {
                    Some(stored) if batch_ids_seen.insert(t.batch_id) => batches.push((i, stored)),
                    _ => decision.duplicate = true,
                }
            }
            let mut check_in = check_in_row(p, Some(license_id.clone()), status, batch_id);
            check_in.valid_until = (status == CheckInStatus::Valid).then(|| store::naive(times.valid_until));
            check_ins.push(check_in);
            decisions.push(Outcome::Decided(decision));
        }

        let instance_rows: Vec<InstanceRow> = touched.iter().map(|id| instances[id].clone()).collect();
        tx.upsert_instances(&instance_rows)?;
        if !deleted.is_empty() {
            let keys: Vec<(&str, &str)> = deleted.iter().map(|(l, i)| (l.as_str(), i.as_str())).collect();
            let at = group.iter().map(|p| p.now).max().map(store::naive).unwrap_or_default();
            tx.delete_instances(&keys, at)?;
        }
        tx.insert_check_ins(&check_ins)?;
        if !pins.is_empty() {
            tx.upsert_install_keys(&pins)?;
        }
        if !events.is_empty() {
            tx.enqueue_events(&events)?;
        }
        let stored: Vec<&store::StoredBatch> = batches.iter().map(|(_, b)| *b).collect();
        let inserted = tx.insert_batches(&stored)?;
        for (i, b) in &batches {
            if !inserted.contains(&b.batch.batch_id) {
                if let Outcome::Decided(decision) = &mut decisions[*i] {
                    decision.duplicate = true;
                }
            }
        }
        // An import refused changes nothing; its refusal is recorded once answered.
        for (p, outcome) in group.iter().zip(&decisions) {
            if let (Some(audit), Outcome::Decided(_)) = (&p.audit, outcome) {
                tx.record_audit(audit)?;
            }
        }
        Ok(decisions)
    })
}

/// The chains of the installs whose usage reports a group imports, as the database holds them
/// at the group's start plus what the group's earlier reports did.
struct ImportChains {
    rows: HashMap<(String, String), InstallKeyRow>,
}

impl ImportChains {
    fn read(tx: &mut store::CheckInWrite<'_>, group: &[Prepared]) -> Result<ImportChains, CheckInError> {
        let keys: Vec<(String, &str)> = group
            .iter()
            .filter_map(|p| match (&p.subject, &p.import) {
                (Subject::Licensed(l), Some(_)) => Some((l.license_id.to_string(), p.instance_id.as_str())),
                _ => None,
            })
            .collect();
        let mut rows = HashMap::new();
        if !keys.is_empty() {
            let keys: Vec<(&str, &str)> = keys.iter().map(|(l, i)| (l.as_str(), *i)).collect();
            for row in tx.install_keys_by_key(&keys)? {
                rows.insert((row.license_id.clone(), row.instance_id.clone()), row);
            }
        }
        Ok(ImportChains { rows })
    }

    /// Why `p`'s report may not be imported now, if it is one and may not.
    fn refusal(&mut self, p: &Prepared) -> Option<BadRequest> {
        let (Subject::Licensed(license), Some(link)) = (&p.subject, &p.import) else { return None };
        let key = (license.license_id.to_string(), p.instance_id.clone());
        let refusal = chain_refusal(self.rows.get(&key), link);
        if refusal.is_none() {
            // The group's later reports of this install follow this one, whose batch the
            // decision will almost always accept.
            self.moved_on(&key.0, &key.1, link, store::naive(p.now));
        }
        refusal
    }

    /// The install's row once `link` is imported: pinned now, or moved on.
    fn moved_on(
        &mut self,
        license_id: &str,
        instance_id: &str,
        link: &ImportLink,
        now: chrono::NaiveDateTime,
    ) -> InstallKeyRow {
        let key = (license_id.to_owned(), instance_id.to_owned());
        // A pin the vendor reset is taken now by this report's key.
        let pinned_at = self.rows.get(&key).filter(|r| !r.public_key.is_empty()).map_or(now, |r| r.pinned_at);
        let row = InstallKeyRow {
            license_id: key.0.clone(),
            instance_id: key.1.clone(),
            public_key: link.public_key.clone(),
            report_sequence: link.sequence as i64,
            report_digest: link.digest.clone(),
            pinned_at,
            imported_at: now,
        };
        self.rows.insert(key, row.clone());
        row
    }
}

/// Why a report may not follow `pinned` (the install's key and last report imported), if it
/// may not. The same report again is no refusal: it is acknowledged as a duplicate. After the
/// vendor reset the pin (an empty key), any report is taken, at its own sequence, and pins its
/// key: the install the pin belongs to may be far along its chain, or behind a forged report.
fn chain_refusal(pinned: Option<&InstallKeyRow>, link: &ImportLink) -> Option<BadRequest> {
    if pinned.is_some_and(|row| row.public_key.is_empty()) {
        return None;
    }
    let n = link.sequence;
    let Some(row) = pinned else {
        return (n != 1).then(|| {
            bad(
                "report_out_of_order",
                format!(
                    "no report of this install was imported yet, so its report 1 comes first; this is report {n} \
                     (import the reports before it, in order)"
                ),
            )
        });
    };
    if row.public_key != link.public_key {
        return Some(bad(
            "foreign_install_key",
            format!(
                "the report is signed by another key than the one this install's first report pinned on {}: it \
                 does not come from this install (if it does, and the pin is wrong, the vendor can reset it: \
                 `licensor admin usage-imports reset-key`)",
                crate::time::format(&store::utc(row.pinned_at))
            ),
        ));
    }
    let last = u64::try_from(row.report_sequence).unwrap_or(0);
    if n == last {
        return (link.digest != row.report_digest).then(|| {
            bad(
                "report_conflict",
                format!(
                    "report {n} of this install was imported before, with other content; nothing was changed"
                ),
            )
        });
    }
    if n < last {
        return Some(bad(
            "report_replayed",
            format!("report {n} is older than report {last}, the last imported: it was replayed; nothing was changed"),
        ));
    }
    if n > last + 1 {
        return Some(bad(
            "report_out_of_order",
            format!(
                "report {} of this install is missing: the last imported is report {last}, and this is report {n}",
                last + 1
            ),
        ));
    }
    if link.previous_digest.as_deref() != Some(row.report_digest.as_str()) {
        return Some(bad(
            "report_out_of_order",
            format!(
                "report {n} does not follow report {last} as it was imported (its previous_digest differs)"
            ),
        ));
    }
    None
}

/// The license's newest key and its payload, when the row holds a key newer than the one the
/// check-in presented. The row's key is one this server issued or one a check-in presented
/// and the ring verified, so it is read, not verified again; one that does not read is damage.
fn newest_key(
    presented: &LicensePayload,
    presented_key: &str,
    row: &store::LicenseRow,
) -> Result<Option<(LicensePayload, String)>, CheckInError> {
    let Some(key) = row.license_key.as_deref() else { return Ok(None) };
    if key == presented_key || row.issued_at <= store::naive(presented.issued_at) {
        return Ok(None);
    }
    let corrupt = |e: crate::token::TokenError| {
        CheckInError::Store(store::StoreError::Corrupt { what: "licenses.license_key", source: e.into() })
    };
    let payload = crate::token::decode::<LicensePayload>(key).map_err(corrupt)?.claims;
    if payload.license_id != presented.license_id {
        return Err(corrupt(crate::token::TokenError::Malformed(crate::token::Malformed::Payload(
            "the key names another license".into(),
        ))));
    }
    Ok(Some((payload, key.to_owned())))
}

fn check_in_row(
    p: &Prepared,
    license_id: Option<String>,
    status: CheckInStatus,
    batch_id: Option<String>,
) -> NewCheckIn<'_> {
    NewCheckIn {
        instance_id: &p.instance_id,
        license_id,
        at: store::naive(p.now),
        status: status.as_str(),
        software_version: &p.software_version,
        telemetry_batch_id: batch_id,
        valid_until: None,
        imported_report: p.import.as_ref().map(|link| link.sequence as i64),
    }
}

/// The decision for a key that cannot be read or trusted, made without the database; `None`
/// for a license this server trusts.
pub(super) fn unlicensed(p: &Prepared) -> Option<Decision> {
    let (status, message) = match &p.subject {
        Subject::Licensed(_) => return None,
        Subject::Unreadable(e) => (CheckInStatus::Malformed, format!("The license key cannot be read: {e}.")),
        Subject::Untrusted { license, error } => match error.verdict() {
            crate::token::Verdict::UnknownKey => (
                CheckInStatus::UnknownKey,
                format!("The license was signed by key {:?}, which this server does not trust.", license.kid),
            ),
            _ => (
                CheckInStatus::BadSignature,
                "The license key's signature does not verify: it was altered or forged.".to_owned(),
            ),
        },
    };
    Some(Decision {
        status,
        message,
        next_check_in_at: p.now + chrono::Duration::seconds(super::RETRY_UNREADABLE),
        valid_until: p.now,
        duplicate: false,
        renewal: None,
        notice: None,
    })
}

/// The last status of a process released in favour of a newer one of its install.
const REPLACED: &str = "replaced";

/// The processes of an install that hold a place at `now`, as the group sees them.
fn live<'a>(
    installs: &'a HashMap<(String, String), BTreeSet<String>>,
    instances: &'a HashMap<(String, String), InstanceRow>,
    install: &'a (String, String),
    now: chrono::NaiveDateTime,
) -> impl Iterator<Item = &'a InstanceRow> + 'a {
    installs
        .get(install)
        .into_iter()
        .flatten()
        .filter_map(move |id| instances.get(&(install.0.clone(), id.clone())))
        .filter(move |r| r.seat_until.is_some_and(|until| until > now) && r.install() == install.1)
}

/// The install a check-in's process shares with others, if it can: `None` where the process is
/// its own install (a client before installs, or one whose install id comes from its data
/// directory, which is the process's own identity). Such a process is stored without an
/// install id and found by its key alone, which spares every new process of that kind an
/// entry in the install index and a look-up by install.
fn shared_install(p: &Prepared) -> Option<&str> {
    p.install
        .as_ref()
        .filter(|i| i.source != crate::protocol::InstallSource::DataDirectory)
        .map(|i| i.id.as_str())
}

/// Whether a check-in can be judged by its license's own terms: when it declares an exemption
/// (private networks allowed, loopback places), when its process is new to a shared install
/// (processes and machines per install: a process that is its own install has no others), or
/// when it needs a seat past the license's seats (the soft overage). `held`: the process holds
/// its place; `past_seats`: it needs a seat and the others hold them all.
fn needs_terms(p: &Prepared, held: bool, past_seats: bool) -> bool {
    p.exemption.is_some() || (!held && shared_install(p).is_some()) || past_seats
}

/// Whether an install holds a seat, and whether it holds a loopback place, at `now`.
fn holding(
    installs: &HashMap<(String, String), BTreeSet<String>>,
    instances: &HashMap<(String, String), InstanceRow>,
    install: &(String, String),
    now: chrono::NaiveDateTime,
) -> (bool, bool) {
    live(installs, instances, install, now).fold((false, false), |(seat, loopback), r| {
        let is_loopback = r.is_loopback();
        (seat || !is_loopback, loopback || is_loopback)
    })
}
