//! Arrivals per study, the quiet-period clock, and the subscribers that hear of received
//! studies (with what each will ask of them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diptych_dicom_adapter::Uid;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::similar::{
    Interest, Question, SimilarAnswer, SimilarError, SimilarMemo, SimilarStudies,
};
use crate::index::Index;
use crate::search::Mode;

/// A study judged complete, shared by every subscriber, with its similar studies computed once
/// per question whoever asks ([`ReceivedStudy::similar_studies`]).
#[derive(Debug)]
pub struct ReceivedStudy {
    /// Its Study Instance UID.
    pub study_instance_uid: Uid,
    /// Instances of it acknowledged since it was last reported.
    pub instances: u32,
    /// When it was judged complete, Unix milliseconds.
    pub completed_unix_ms: i64,
    /// Its similar-studies computations, planned for the subscribers' interests.
    similar: SimilarMemo,
}

impl ReceivedStudy {
    /// A received study whose similar studies are computed once per question, planned for
    /// `interests`.
    pub fn new<'a>(
        study_instance_uid: Uid,
        instances: u32,
        completed_unix_ms: i64,
        interests: impl IntoIterator<Item = &'a Interest>,
    ) -> Self {
        ReceivedStudy {
            study_instance_uid,
            instances,
            completed_unix_ms,
            similar: SimilarMemo::planned(interests),
        }
    }

    /// Its `top_k` most similar studies in `mode` among the records `filter` keeps
    /// ([`Index::similar_studies`]), computed once for every subscriber that asks the same
    /// (or, for fewer hits, a prefix of a computation of more); a failure is shared the same way.
    pub async fn similar_studies(
        &self,
        index: &Index,
        mode: Mode,
        filter: &str,
        top_k: usize,
    ) -> Result<SimilarAnswer, SimilarError> {
        let question = Question {
            mode,
            filter: filter.to_string(),
        };
        self.similar
            .answer(&question, top_k, |k| async move {
                let (slices, hits, model_id) = index
                    .similar_studies(&self.study_instance_uid, mode, filter, k)
                    .await?;
                Ok(SimilarStudies {
                    slices,
                    hits,
                    model_id,
                })
            })
            .await
    }
}

/// The interests of the current subscribers, by subscription.
#[derive(Default)]
struct Interests {
    next: u64,
    by_subscription: HashMap<u64, Vec<Interest>>,
}

/// Takes a subscription's interests out of the registry when it is dropped.
struct Registration {
    id: u64,
    interests: Arc<Mutex<Interests>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut interests) = self.interests.lock() {
            interests.by_subscription.remove(&self.id);
        }
    }
}

/// One subscriber's stream of received studies; its interests count while it lives.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<ReceivedStudy>>,
    _registration: Registration,
}

impl Subscription {
    /// The next received study (see [`broadcast::Receiver::recv`] for lagging and closing).
    pub async fn recv(&mut self) -> Result<Arc<ReceivedStudy>, RecvError> {
        self.receiver.recv().await
    }

    /// The next received study if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<ReceivedStudy>, TryRecvError> {
        self.receiver.try_recv()
    }
}

struct Arrivals {
    last: Instant,
    instances: u32,
}

/// Watches instance arrivals and announces each study once it has been quiet long enough.
pub struct StudyTracker {
    quiet: Duration,
    studies: Mutex<HashMap<Uid, Arrivals>>,
    announce: broadcast::Sender<Arc<ReceivedStudy>>,
    /// Locked while a subscriber joins and while a study is announced, so that a study's memo
    /// is planned for exactly the subscribers that receive it.
    interests: Arc<Mutex<Interests>>,
}

impl StudyTracker {
    /// A tracker with the given quiet period.
    pub fn new(quiet: Duration) -> Arc<Self> {
        let (announce, _) = broadcast::channel(256);
        Arc::new(StudyTracker {
            quiet,
            studies: Mutex::new(HashMap::new()),
            announce,
            interests: Arc::default(),
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

    /// Receives every study announced from now on; `interests` are what the subscriber will
    /// ask of each, so that one computation per question serves every subscriber.
    pub fn subscribe(&self, interests: impl IntoIterator<Item = Interest>) -> Subscription {
        let registry = self.interests.clone();
        let mut locked = self
            .interests
            .lock()
            .expect("subscriber interests poisoned");
        let id = locked.next;
        locked.next += 1;
        locked
            .by_subscription
            .insert(id, interests.into_iter().collect());
        let receiver = self.announce.subscribe();
        Subscription {
            receiver,
            _registration: Registration {
                id,
                interests: registry,
            },
        }
    }

    /// Subscribers now (the Watch streams and the KOS sender).
    pub fn subscribers(&self) -> usize {
        self.announce.receiver_count()
    }

    /// Announces the studies quiet for the quiet period, if `indexed` says all their
    /// instances are applied; returns them.
    pub fn tick(&self, indexed: impl Fn(&Uid) -> bool) -> Vec<Arc<ReceivedStudy>> {
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
        if done.is_empty() {
            return received;
        }
        let interests = self
            .interests
            .lock()
            .expect("subscriber interests poisoned");
        for uid in done {
            if let Some(a) = studies.remove(&uid) {
                let study = Arc::new(ReceivedStudy::new(
                    uid,
                    a.instances,
                    completed_unix_ms,
                    interests.by_subscription.values().flatten(),
                ));
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
        let mut rx = tracker.subscribe([]);
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
    fn a_study_is_planned_for_the_interests_of_the_subscribers_that_receive_it() {
        let tracker = StudyTracker::new(Duration::ZERO);
        let interest = |mode, top_k| Interest {
            question: Question {
                mode,
                filter: String::new(),
            },
            top_k,
        };
        let mut watch =
            tracker.subscribe([interest(Mode::Normal, 10), interest(Mode::Abnormal, 10)]);
        let kos = tracker.subscribe([interest(Mode::Normal, 5)]);
        assert_eq!(tracker.subscribers(), 2);
        tracker.arrived(&uid("1"));
        let first = tracker.tick(|_| true);
        assert_eq!(first[0].similar.questions(), 2, "normal and abnormal");
        assert!(
            Arc::ptr_eq(&watch.try_recv().unwrap(), &first[0]),
            "one shared study"
        );
        drop(kos);
        drop(watch);
        assert_eq!(tracker.subscribers(), 0);
        tracker.arrived(&uid("2"));
        let second = tracker.tick(|_| true);
        assert_eq!(
            second[0].similar.questions(),
            0,
            "a gone subscriber's interests go with it"
        );
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
