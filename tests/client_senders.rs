//! Senders (`licensor::client::sender`), black-box: a real server, the library in a test host.
//! A host's sender on Enterprise takes the batches while check-ins carry none; a sender that
//! fails or panics is offered the same batch, byte for byte, until it acknowledges, and an
//! acknowledged batch moves to the ledger once; on Community the configured sender is not used;
//! an air-gapped deployment with a report directory writes its signed reports there on its own
//! schedule and connects nowhere.

mod common;

use std::io::Read as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Db, Harness};
use licensor::client::licensing::CheckInOutcome;
use licensor::client::sender::{Batch, Delivered, Delivery, ReportFiles, Sender};
use licensor::client::store::LocalStore;
use licensor::client::Licensing;
use licensor::license::Tier;
use licensor::protocol::CheckInStatus;

use common::{block_on, client_config as config};

/// A sender that answers from a script (then acknowledges), keeping every offer it saw.
struct Scripted {
    script: Mutex<Vec<&'static str>>,
    offers: Mutex<Vec<Batch>>,
}

impl Scripted {
    fn new(script: &[&'static str]) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Mutex::new(script.iter().rev().copied().collect()),
            offers: Mutex::new(Vec::new()),
        })
    }
}

impl Sender for Scripted {
    fn describe(&self) -> String {
        "the host's archive".into()
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> Delivery<'a> {
        Box::pin(async move {
            self.offers.lock().unwrap().push(batch.clone());
            let next = self.script.lock().unwrap().pop();
            match next {
                Some("fail") => Delivered::Failed { error: "the archive is down".into(), retry_after: None },
                Some("panic") => panic!("the archive's client has a bug"),
                _ => Delivered::Acknowledged,
            }
        })
    }
}

fn server_batches(h: &Harness, instance: &str) -> i64 {
    h.store.telemetry_counts(instance).unwrap()["telemetry_batches"]
}

#[test]
fn an_enterprise_hosts_sender_takes_the_batches_exactly_once_while_check_ins_carry_none() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Enterprise, 5);
    let data = h.dir.path().join("client");
    let archive = Scripted::new(&["fail", "panic", "ack"]);
    let mut c = config(&h, &key, &data);
    c.sender = Some(archive.clone());
    let l = Licensing::start(c).unwrap();
    assert!(
        l.notices()
            .iter()
            .any(|n| n.contains("telemetry batches go to the host's archive; check-ins carry no telemetry")),
        "{:?}",
        l.notices()
    );
    l.track_feature("export");
    let instance = l.instance_id().unwrap();

    // Refused, then panicking: the license check-ins go on (valid), the batch stays and is
    // offered again after a failure's backoff, not the Enterprise interval of 30 days.
    for _ in 0..2 {
        match block_on(l.check_in_now()) {
            CheckInOutcome::Answered {
                status: CheckInStatus::Valid,
                batch_acknowledged: false,
                next_check_in_at,
            } => {
                assert!(next_check_in_at <= h.now() + chrono::Duration::seconds(31), "{next_check_in_at}")
            }
            other => panic!("{other:?}"),
        }
    }
    let store = LocalStore::open(&data).unwrap();
    assert!(store.outbox().unwrap().is_some() && store.ledger().unwrap().is_empty());
    // Then acknowledged: to the ledger, once.
    match block_on(l.check_in_now()) {
        CheckInOutcome::Answered { status: CheckInStatus::Valid, batch_acknowledged: true, .. } => {}
        other => panic!("{other:?}"),
    }
    let offers = archive.offers.lock().unwrap().clone();
    assert_eq!(offers.len(), 3);
    assert!(offers.iter().all(|o| *o == offers[0]), "the same batch, byte for byte, at every offer");
    let batch: serde_json::Value = serde_json::from_str(&offers[0].payload).unwrap();
    assert_eq!(batch["usage"][0]["name"], "export");
    assert_eq!(offers[0].instance_id, instance);
    assert_eq!(offers[0].digest, licensor::protocol::digest(offers[0].payload.as_bytes()));
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].batch_id, offers[0].batch_id);
    assert_eq!(store.outbox().unwrap(), None);
    // The server judged the license three times and received no telemetry.
    assert_eq!(h.store.check_ins_of(&instance).unwrap().len(), 3);
    assert_eq!(server_batches(&h, &instance), 0);

    // The next check-in offers the next batch only.
    l.track_feature("import");
    block_on(l.check_in_now());
    let offers = archive.offers.lock().unwrap().clone();
    assert_eq!(offers.len(), 4);
    assert_ne!(offers[3].batch_id, offers[0].batch_id);
    assert_eq!(store.ledger().unwrap().len(), 2);
    l.shutdown();
}

#[test]
fn on_community_a_configured_sender_is_not_used_and_the_server_receives_the_usage() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Community, 5);
    let archive = Scripted::new(&[]);
    let mut c = config(&h, &key, &h.dir.path().join("client"));
    c.sender = Some(archive.clone());
    let l = Licensing::start(c).unwrap();
    assert!(
        l.notices().iter().any(|n| n.contains("the host's archive is not used on the community tier")),
        "{:?}",
        l.notices()
    );
    l.track_feature("export");
    match block_on(l.check_in_now()) {
        CheckInOutcome::Answered { status: CheckInStatus::Valid, batch_acknowledged: true, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(archive.offers.lock().unwrap().is_empty());
    assert_eq!(server_batches(&h, &l.instance_id().unwrap()), 1);
    l.shutdown();
}

/// Air-gapped with `LICENSOR_REPORT_DIR`: the worker writes the signed report there after its
/// first delay, the same report again until a receipt comes back, and connects nowhere.
#[test]
fn an_air_gapped_deployment_writes_its_signed_reports_to_the_report_directory_by_itself() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{}", listener.local_addr().unwrap());
    {
        let counted = connections.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.read(&mut [0u8; 64]);
            }
        });
    }
    let key = h.license(Tier::Enterprise, 5);
    let data = h.dir.path().join("air");
    let reports = h.dir.path().join("outgoing reports");
    let mut c = config(&h, &key, &data);
    c.server_url = Some(url);
    c.switches.telemetry_disabled = true;
    c.report_dir = Some(reports.clone());
    c.first_check_in_after = Duration::from_millis(50);
    let l = Licensing::start(c).unwrap();
    assert!(
        l.notices().iter().any(|n| n.contains("batches go to signed usage report files in")
            && n.contains("no connection is made")),
        "{:?}",
        l.notices()
    );
    l.track_feature("export");
    l.flush().unwrap();
    let files = ReportFiles::new(&reports);
    let first = files.path_of(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !first.exists() {
        assert!(std::time::Instant::now() < deadline, "no report was written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = std::fs::read_to_string(&first).unwrap();
    let pending = l.export_usage_report().unwrap();
    assert!(pending.again);
    assert_eq!(written, pending.text, "the file is the report waiting for its receipt");
    // Offered again (a command's check-in): the file stays as it is, and no second report.
    match block_on(l.check_in_now()) {
        CheckInOutcome::Delivered { delivered: Delivered::Handed, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&first).unwrap(), written);
    assert!(!files.path_of(2).exists());
    // A file of that name with other content is not overwritten.
    std::fs::write(&first, "something else").unwrap();
    match block_on(l.check_in_now()) {
        CheckInOutcome::Delivered { delivered: Delivered::Failed { error, .. }, .. } => {
            assert!(error.contains("exists with other content"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "something else");
    l.shutdown();
    assert_eq!(connections.load(Ordering::SeqCst), 0, "air-gapped connects nowhere");

    // The report went through the vendor: its receipt moves the chain on, and the next
    // delivery writes report 2.
    std::fs::write(&first, &written).unwrap();
    let response = h
        .http
        .post(h.url("/v1/admin/usage-imports"))
        .bearer_auth(common::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(written.clone())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut c = config(&h, &key, &data);
    c.switches.telemetry_disabled = true;
    c.report_dir = Some(reports.clone());
    let l = Licensing::start(c).unwrap();
    l.import_usage_receipt(&response.text().unwrap()).unwrap();
    l.track_feature("export");
    block_on(l.check_in_now());
    let second =
        licensor::usage_report::read_report(&std::fs::read_to_string(files.path_of(2)).unwrap()).unwrap();
    assert_eq!(second.body.sequence, 2);
    l.shutdown();
}
