//! Arrivals per study and the quiet-period clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diptych_dicom_adapter::Uid;
use tokio::sync::broadcast;

/// A study judged complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedStudy {
    /// Its Study Instance UID.
    pub study_instance_uid: Uid,
    /// Instances of it acknowledged since it was last reported.
    pub instances: u32,
    /// When it was judged complete, Unix milliseconds.
    pub completed_unix_ms: i64,
}

struct Arrivals {
    last: Instant,
    instances: u32,
}

/// Watches instance arrivals and announces each study once it has been quiet long enough.
pub struct StudyTracker {
    quiet: Duration,
    studies: Mutex<HashMap<Uid, Arrivals>>,
    announce: broadcast::Sender<ReceivedStudy>,
}

impl StudyTracker {
    /// A tracker with the given quiet period.
    pub fn new(quiet: Duration) -> Arc<Self> {
        let (announce, _) = broadcast::channel(256);
        Arc::new(StudyTracker {
            quiet,
            studies: Mutex::new(HashMap::new()),
            announce,
        })
    }

    /// The quiet period.
    pub fn quiet_period(&self) -> Duration {
        self.quiet
    }

    /// Notes that an instance of `study_instance_uid` was acknowledged now.
    pub fn arrived(&self, study_instance_uid: &Uid) {
        let mut studies = self.studies.lock().expect("study tracker poisoned");
        let entry = studies
            .entry(study_instance_uid.clone())
            .or_insert(Arrivals {
                last: Instant::now(),
                instances: 0,
            });
        entry.last = Instant::now();
        entry.instances += 1;
    }

    /// Receives every study announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReceivedStudy> {
        self.announce.subscribe()
    }

    /// Announces the studies quiet for the quiet period, if `indexed` says all their
    /// instances are applied; returns them.
    pub fn tick(&self, indexed: impl Fn(&Uid) -> bool) -> Vec<ReceivedStudy> {
        let now = Instant::now();
        let mut studies = self.studies.lock().expect("study tracker poisoned");
        let done: Vec<Uid> = studies
            .iter()
            .filter(|(uid, a)| now.duration_since(a.last) >= self.quiet && indexed(uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        let completed_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let mut received = Vec::new();
        for uid in done {
            if let Some(a) = studies.remove(&uid) {
                let study = ReceivedStudy {
                    study_instance_uid: uid,
                    instances: a.instances,
                    completed_unix_ms,
                };
                // No subscriber is fine: nobody is watching.
                let _ = self.announce.send(study.clone());
                received.push(study);
            }
        }
        received
    }
}

/// How often the quiet-period clock is checked.
pub const TICK: Duration = Duration::from_millis(250);

/// Checks the clock every [`TICK`] until the tracker is dropped elsewhere; `indexed` says
/// whether every acknowledged instance of a study is searchable.
pub async fn run(tracker: Arc<StudyTracker>, indexed: impl Fn(&Uid) -> bool + Send + 'static) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for study in tracker.tick(&indexed) {
            tracing::info!(
                instances = study.instances,
                "study received (quiet period over)"
            );
        }
        if Arc::strong_count(&tracker) == 1 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(text: &str) -> Uid {
        Uid::parse(text).unwrap()
    }

    #[test]
    fn a_study_is_announced_once_after_its_quiet_period() {
        let tracker = StudyTracker::new(Duration::from_millis(50));
        let mut rx = tracker.subscribe();
        tracker.arrived(&uid("1.2.3"));
        tracker.arrived(&uid("1.2.3"));
        assert!(
            tracker.tick(|_| true).is_empty(),
            "announced before the quiet period"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            tracker.tick(|_| false).is_empty(),
            "announced before it was indexed"
        );
        let got = tracker.tick(|_| true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].instances, 2);
        assert_eq!(rx.try_recv().unwrap().study_instance_uid, uid("1.2.3"));
        assert!(tracker.tick(|_| true).is_empty(), "announced twice");
    }

    #[test]
    fn a_new_arrival_restarts_the_clock() {
        let tracker = StudyTracker::new(Duration::from_millis(80));
        tracker.arrived(&uid("9"));
        std::thread::sleep(Duration::from_millis(50));
        tracker.arrived(&uid("9"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(tracker.tick(|_| true).is_empty());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(tracker.tick(|_| true).len(), 1);
    }
}
