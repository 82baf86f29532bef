//! Running a backfill job: ask the archive (C-FIND, or QIDO-RS — or read back the job being
//! resumed), then pull each study not yet indexed (C-GET, C-MOVE or WADO-RS), at the pace asked,
//! recording each finished study durably.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::output::{
    Destination, FetchOptions, FetchTarget, fetch, find_studies, move_to,
};
use diptych_dicom_adapter::scp::StoreSink;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::position::{self, Finished, FinishedLine, JobFile, Journal, PlannedStudy};
use super::progress::{Failure, Progress, State};
use super::spec::{JobSpec, Method, Pace, Source};
use super::web;
use crate::archive::dicomweb::DicomWeb;
use crate::audit::{AuditEvent, Outcome, What};
use crate::catalog::UidLookup;
use crate::index::Index;

/// Longest wait for a C-FIND's answers.
const FIND_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for the archive's next message while a study is pulled (and for a DICOMweb
/// archive's answer to begin, or a QIDO-RS page to arrive whole).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything a job needs from the server.
pub struct JobContext {
    /// The data folder (the position lives in `backfill/`).
    pub data_dir: std::path::PathBuf,
    /// This server's AE title: the calling AE title, and the C-MOVE destination.
    pub ae_title: String,
    /// The index, to see what is already there.
    pub index: Arc<Index>,
    /// Where fetched instances go: the C-STORE path.
    pub sink: Arc<dyn StoreSink>,
    /// Bounds checked on every instance.
    pub limits: diptych_dicom_adapter::Limits,
    /// The audit trail: each run ends with a `backfill` event.
    pub audit: crate::audit::Audit,
    /// Who asked for the job, for that event.
    pub who: crate::audit::Who,
}

/// Runs the job `spec` to its end (or until `stop` turns true), publishing its progress.
pub async fn run(
    context: JobContext,
    spec: JobSpec,
    pace: Pace,
    progress: watch::Sender<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let publish = |update: &dyn Fn(&mut Progress)| {
        progress.send_modify(|p| {
            update(p);
            p.elapsed = started.elapsed();
        });
    };
    let remote = match &spec.archive {
        Source::Dicom(node) => match node.resolve() {
            Ok(addr) => Remote::Dicom(Destination {
                addr,
                called_ae: node.ae_title.clone(),
                calling_ae: context.ae_title.clone(),
            }),
            Err(e) => return publish(&|p| p.end(State::Stopped, e.to_string())),
        },
        Source::Web(archive) => match web::archive(&archive.url, IDLE_TIMEOUT) {
            Ok(web) => Remote::Web(Box::new(web)),
            Err(e) => return publish(&|p| p.end(State::Stopped, e.to_string())),
        },
    };
    // Resume the job of the data folder when it is this one and not complete.
    let resumed = position::load(&context.data_dir).and_then(|(job, finished)| {
        let done = |s: &PlannedStudy| {
            matches!(
                finished.get(&s.uid),
                Some(Finished::Indexed { .. } | Finished::Skipped)
            )
        };
        (job.spec == spec && !job.studies.iter().all(done)).then_some((job, finished))
    });
    let (job, finished) = match resumed {
        Some(found) => found,
        None => {
            publish(&|p| p.state = State::Querying);
            let found = match &remote {
                Remote::Dicom(archive) => find_studies(archive, &spec.query, FIND_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string()),
                Remote::Web(archive) => web::search(archive, &spec.query)
                    .await
                    .map_err(|e| e.to_string()),
            };
            let found = match found {
                Ok(found) => found,
                Err(e) => return publish(&|p| p.end(State::Stopped, e.clone())),
            };
            if found.malformed + found.outside_query > 0 {
                tracing::warn!(
                    malformed = found.malformed,
                    outside_query = found.outside_query,
                    "backfill: the archive returned matches without a valid Study Instance UID or outside the query; left out"
                );
            }
            let job = JobFile {
                version: 1,
                spec: spec.clone(),
                studies: found
                    .studies
                    .into_iter()
                    .map(|s| PlannedStudy {
                        uid: s.study_instance_uid.into_string(),
                        instances: s.instances,
                    })
                    .collect(),
            };
            if let Err(e) = position::start(&context.data_dir, &job) {
                return publish(&|p| p.end(State::Stopped, e.to_string()));
            }
            (job, HashMap::new())
        }
    };
    let mut journal = match Journal::open(&context.data_dir) {
        Ok(journal) => journal,
        Err(e) => return publish(&|p| p.end(State::Stopped, e.to_string())),
    };
    let mut pending = Vec::new();
    let mut resumed_studies = 0;
    let (mut indexed, mut skipped) = (0, 0);
    for study in &job.studies {
        match finished.get(&study.uid) {
            Some(Finished::Indexed { .. }) => indexed += 1,
            Some(Finished::Skipped) => skipped += 1,
            _ => {
                pending.push(study.clone());
                continue;
            }
        }
        resumed_studies += 1;
    }
    publish(&|p| {
        p.state = State::Fetching;
        p.studies_total = job.studies.len() as u32;
        p.studies_indexed = indexed;
        p.studies_skipped = skipped;
        p.resumed_studies = resumed_studies;
    });
    tracing::info!(
        studies = job.studies.len(),
        resumed = resumed_studies,
        archive = %spec.archive,
        "backfill started"
    );
    let context = Arc::new(context);
    let remote = Arc::new(remote);
    let mut queue = pending.into_iter();
    let mut running = JoinSet::new();
    let mut next_start = Instant::now();
    let mut stopped = false;
    loop {
        // Start studies while there is room, at the pace asked.
        while !stopped && running.len() < pace.concurrency as usize {
            let Some(study) = queue.next() else { break };
            let wait = pace
                .off_hours
                .map(|w| w.wait_now())
                .unwrap_or_default()
                .max(next_start.saturating_duration_since(Instant::now()));
            if !wait.is_zero() {
                if pace.off_hours.is_some_and(|w| !w.wait_now().is_zero()) {
                    publish(&|p| p.state = State::Waiting);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => { stopped = true; break; }
                }
                publish(&|p| p.state = State::Fetching);
            }
            next_start = Instant::now() + pace.interval();
            let (context, remote, method) = (context.clone(), remote.clone(), spec.method);
            running.spawn(async move {
                let finished = pull(&context, &remote, method, &study).await;
                (study.uid, finished)
            });
        }
        if stopped {
            // Stopped while waiting to start the next study: the ones in flight are abandoned.
            running.abort_all();
        }
        if running.is_empty() {
            break;
        }
        let joined = tokio::select! {
            joined = running.join_next() => joined,
            _ = stop.wait_for(|s| *s), if !stopped => {
                stopped = true;
                // Studies in flight are abandoned: what they acknowledged is durable, the rest
                // is pulled again on resume.
                running.abort_all();
                continue;
            }
        };
        let Some(Ok((study, finished))) = joined else {
            continue;
        };
        if let Err(e) = journal.record(&FinishedLine {
            study: study.clone(),
            finished: finished.clone(),
        }) {
            running.abort_all();
            return publish(&|p| p.end(State::Stopped, e.to_string()));
        }
        publish(&|p| match &finished {
            Finished::Indexed { instances } => {
                p.studies_indexed += 1;
                p.instances_stored += u64::from(*instances);
            }
            Finished::Skipped => p.studies_skipped += 1,
            Finished::Failed { reason } => {
                p.studies_failed += 1;
                p.failures.push(Failure {
                    study_instance_uid: study.clone(),
                    reason: reason.clone(),
                });
            }
        });
    }
    let summary = progress.borrow().summary();
    tracing::info!(%summary, stopped, "backfill ended");
    let ended = progress.borrow().clone();
    let event = AuditEvent::now(
        if stopped || ended.studies_failed > 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        context.who.clone(),
        Some(remote.peer()),
        What::Backfill {
            archive: spec.archive.to_string(),
            state: if stopped { "stopped" } else { "done" }.to_string(),
            studies_matched: ended.studies_total,
            studies_indexed: ended.studies_indexed,
            studies_failed: ended.studies_failed,
            instances: ended.instances_stored,
        },
    );
    context.audit.record(event);
    if stopped {
        publish(&|p| {
            p.end(
                State::Stopped,
                "the server is stopping; call backfill again with the same request to resume"
                    .into(),
            )
        });
    } else {
        publish(&|p| {
            let line = p.summary();
            p.end(State::Done, line)
        });
    }
}

/// The archive as the job talks to it.
enum Remote {
    /// A DICOM node: C-FIND, C-GET, C-MOVE.
    Dicom(Destination),
    /// A DICOMweb archive: QIDO-RS, WADO-RS (its HTTP client is large: boxed).
    Web(Box<DicomWeb>),
}

impl Remote {
    /// Its address, for the audit trail.
    fn peer(&self) -> String {
        match self {
            Remote::Dicom(archive) => archive.addr.to_string(),
            Remote::Web(archive) => archive.authority(),
        }
    }
}

/// Pulls one study, unless the index already holds as many of its instances as the archive.
async fn pull(
    context: &JobContext,
    remote: &Remote,
    method: Method,
    study: &PlannedStudy,
) -> Finished {
    let uid = match Uid::parse(&study.uid) {
        Ok(uid) => uid,
        Err(e) => {
            return Finished::Failed {
                reason: format!("Study Instance UID {e}"),
            };
        }
    };
    if let Some(expected) = study.instances {
        let held = context
            .index
            .catalog()
            .records_with(&UidLookup::study(&uid))
            .map(|records| records.iter().filter(|(_, frame)| *frame == 0).count())
            .unwrap_or(0);
        if expected > 0 && held >= expected as usize {
            return Finished::Skipped;
        }
    }
    let target = FetchTarget::Study(uid.clone());
    match (remote, method) {
        (Remote::Web(archive), Method::WadoRs) => {
            web::retrieve(archive, context, &uid, IDLE_TIMEOUT).await
        }
        (Remote::Dicom(archive), Method::CGet) => {
            let options = FetchOptions {
                idle_timeout: IDLE_TIMEOUT,
                limits: context.limits,
                ..Default::default()
            };
            match fetch(archive, &target, context.sink.as_ref(), options).await {
                Ok(report) if report.complete() => Finished::Indexed {
                    instances: report.stored,
                },
                Ok(report) => Finished::Failed {
                    reason: match report.refused.first() {
                        Some(first) => format!(
                            "{} of its instances were refused here (first: status 0x{:04X}, {}); the rest are indexed",
                            report.refused.len(),
                            first.status,
                            first.comment
                        ),
                        None => format!(
                            "the archive ended the C-GET with status 0x{:04X} after {} failed sub-operations (instances of SOP classes diptych does not index, or the archive's own failures); {} stored",
                            report.status, report.archive_counts.failed, report.stored
                        ),
                    },
                },
                Err(e) => Finished::Failed {
                    reason: e.to_string(),
                },
            }
        }
        (Remote::Dicom(archive), Method::CMove) => {
            match move_to(archive, &target, &archive.calling_ae, IDLE_TIMEOUT).await {
                Ok((0x0000, counts)) if counts.failed == 0 => Finished::Indexed {
                    instances: u32::from(counts.completed),
                },
                Ok((status, counts)) => Finished::Failed {
                    reason: format!(
                        "the archive ended the C-MOVE with status 0x{status:04X}: {} sent, {} failed; check that it knows this server's AE title and address",
                        counts.completed, counts.failed
                    ),
                },
                Err(e) => Finished::Failed {
                    reason: e.to_string(),
                },
            }
        }
        _ => Finished::Failed {
            reason: "WADO-RS pulls from a DICOMweb base URL, C-GET and C-MOVE from a DICOM node; \
                     give the archive that matches the method"
                .into(),
        },
    }
}
