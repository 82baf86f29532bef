//! Accepting an instance: examine it completely (parse, check its UIDs against the UID rule of
//! [`diptych_dicom_adapter::uid`], decode every frame, apply the image contract) so that nothing
//! acknowledged can fail later, drop duplicates, then append it to the write-ahead log and wait
//! for the fsync. The acknowledgement means "durable".
//!
//! The pixels are decoded while the log writes and syncs the instance's bytes ([`inspect`] is
//! the cheap half done before, [`decode`] the half overlapped with the sync): one DIMSE sender
//! waits for each answer, so the overlap takes the decode off its per-instance time. An instance
//! whose pixels do not decode is refused all the same; its log entry is skipped by the worker,
//! and by a replay, which examines every entry again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use diptych::preprocess::{PreprocessError, PreprocessParams, preprocess};
use diptych_dicom_adapter::{AdapterError, Instance, InstanceMetadata, InstanceUids, Limits, Uid};
use tracing::Instrument;

use super::faults::FaultPoint;
use super::stages::Stopwatch;
use super::work::{Prepared, Work, in_flight_entry};
use super::{Index, IndexError};
use crate::catalog::UidLookup;
use crate::encoder::Engine;
use crate::record::key_of;
use crate::store::wal::WalRecord;

/// What examining an instance found.
pub enum Examined {
    /// An image: its frames are ready for the encoder.
    Image(Box<Prepared>),
    /// A non-image object (SR, KOS, presentation state, raw data): counted, not indexed.
    NonImage,
    /// An instance already indexed or in flight (found before its pixels were decoded).
    Duplicate(Uid),
}

/// Why an instance was refused. The message names the problem and never holds patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It cannot be parsed or decoded (DICOM status 0xC000).
    CannotUnderstand(String),
    /// This instance could not be kept now, e.g. its log write failed (DICOM status 0xA700).
    OutOfResources(String),
    /// The data folder's free space is below its floor (DICOM 0xA700, gRPC RESOURCE_EXHAUSTED).
    DiskFull(String),
    /// Indexing keeps failing and new work is refused until it recovers (DICOM 0xA700, gRPC
    /// UNAVAILABLE).
    Unavailable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::CannotUnderstand(m)
            | Refusal::OutOfResources(m)
            | Refusal::DiskFull(m)
            | Refusal::Unavailable(m) => f.write_str(m),
        }
    }
}

/// What happened to an instance offered to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Durable; its frames will be searchable shortly.
    Accepted {
        /// SOP Instance UID.
        sop_instance_uid: String,
        /// Study Instance UID.
        study_instance_uid: String,
        /// Frames (records) it brings.
        slices: u32,
    },
    /// Already indexed (or in flight) with the same SOP Instance UID: kept once.
    Duplicate {
        /// SOP Instance UID.
        sop_instance_uid: String,
    },
    /// A non-image object: acknowledged and counted, not indexed.
    NonImage,
    /// Refused, with the reason.
    Refused {
        /// SOP Instance UID, when it could be read.
        sop_instance_uid: Option<String>,
        /// Why.
        refusal: Refusal,
    },
}

/// Why an instance cannot be indexed; the message names the attribute or frame and what is wrong
/// with it, never patient data. Over DICOM it is the error comment of a 0xC000 answer.
#[derive(Debug, thiserror::Error)]
pub enum ExamineError {
    /// The instance does not parse, a UID breaks the rule, or a frame cannot be decoded.
    #[error(transparent)]
    Dicom(#[from] AdapterError),
    /// A decoded frame does not meet the image contract.
    #[error("frame {frame} cannot be pre-processed: {error}")]
    Preprocess {
        /// Index of the frame, from 0.
        frame: u32,
        /// What the image contract refused.
        error: PreprocessError,
    },
    /// Decoding stopped unexpectedly (a codec's bug, logged); the instance is refused.
    #[error("the pixel data could not be decoded (the decoder failed unexpectedly)")]
    DecoderFailed,
}

/// Parses, decodes and pre-processes every frame of `bytes`; the error says what is wrong with
/// the instance (never patient data).
///
/// Every instance, image or not, must carry a SOP Class, SOP Instance, Study and Series UID that
/// follow the UID rule; nothing else is looked at before they are checked.
///
/// `known` is asked, once the instance is parsed and before any pixel is decoded, whether its
/// SOP Instance UID is already indexed or in flight: duplicates cost a parse, not a decode.
pub fn examine(
    bytes: &[u8],
    limits: &Limits,
    engine: &Engine,
    known: impl Fn(&Uid) -> bool,
) -> Result<Examined, ExamineError> {
    let instance = diptych_dicom_adapter::parse(bytes, limits)?;
    examine_parsed(&instance, engine, known)
}

/// [`examine`] for an instance already parsed (under the same limits).
#[tracing::instrument(name = "decode", level = "info", skip_all)]
pub fn examine_parsed(
    instance: &Instance,
    engine: &Engine,
    known: impl Fn(&Uid) -> bool,
) -> Result<Examined, ExamineError> {
    examine_with(instance, &engine.manifest().preprocess, known)
}

/// [`examine_parsed`] under the pre-processing `params` of a bundle's manifest, without an
/// encoder: a cluster's router checks with it, before publishing, that a shard will be able to
/// index the instance.
pub fn examine_with(
    instance: &Instance,
    params: &PreprocessParams,
    known: impl Fn(&Uid) -> bool,
) -> Result<Examined, ExamineError> {
    Ok(match inspect(instance, known)? {
        Inspected::Image(header) => Examined::Image(Box::new(decode(instance, *header, params)?)),
        Inspected::NonImage => Examined::NonImage,
        Inspected::Duplicate(uid) => Examined::Duplicate(uid),
    })
}

/// What an instance's header says, read before any pixel is decoded.
pub enum Inspected {
    /// An image, whose frames [`decode`] turns into model input.
    Image(Box<Header>),
    /// A non-image object (SR, KOS, presentation state, raw data): counted, not indexed.
    NonImage,
    /// An instance already indexed or in flight.
    Duplicate(Uid),
}

/// The header of an image instance: everything the catalog keeps, checked, and its frame count.
pub struct Header {
    /// The catalog metadata; its UIDs are those of `uids`.
    pub metadata: InstanceMetadata,
    /// The identifying UIDs, checked against the UID rule.
    pub uids: InstanceUids,
    /// How many frames it holds.
    pub frames: u32,
}

/// The first half of [`examine_with`]: the UID rule, image or not, duplicate or not, and the
/// header — cheap, no pixel decoded.
pub fn inspect(
    instance: &Instance,
    known: impl Fn(&Uid) -> bool,
) -> Result<Inspected, ExamineError> {
    let uids = instance.uids()?;
    if !instance.is_image() {
        return Ok(Inspected::NonImage);
    }
    if known(&uids.sop_instance) {
        return Ok(Inspected::Duplicate(uids.sop_instance));
    }
    let mut metadata = instance.metadata();
    // The catalog holds the UIDs as checked (padding stripped).
    metadata.sop_class_uid = uids.sop_class.to_string();
    metadata.sop_instance_uid = uids.sop_instance.to_string();
    metadata.study_instance_uid = uids.study.to_string();
    metadata.series_instance_uid = uids.series.to_string();
    let frames = instance.frame_count()?;
    Ok(Inspected::Image(Box::new(Header {
        metadata,
        uids,
        frames,
    })))
}

/// The second half of [`examine_with`]: decodes and pre-processes every frame of an image whose
/// [`Header`] was inspected; the error names the frame and what is wrong with it.
pub fn decode(
    instance: &Instance,
    header: Header,
    params: &PreprocessParams,
) -> Result<Prepared, ExamineError> {
    let mut frames = Vec::with_capacity(header.frames as usize);
    for i in 0..header.frames {
        let frame = instance.decode_frame(i)?;
        let input = preprocess(&frame.raw_frame(), params)
            .map_err(|error| ExamineError::Preprocess { frame: i, error })?;
        frames.push(input.pixels);
    }
    Ok(Prepared {
        keys_instance: in_flight_entry(&header.uids).0,
        metadata: header.metadata,
        uids: header.uids,
        frames,
    })
}

impl Index {
    /// Stalls for longer than the worker waits for a sequence gap when a test armed
    /// [`FaultPoint::SlowHandOver`]: the worker reads the entry back from the log before this
    /// acceptor's copy arrives. Unarmed, one atomic load.
    pub(super) async fn hand_over_late_when_injected(&self) {
        if self.faults.hit(FaultPoint::SlowHandOver) {
            tokio::time::sleep(super::apply::GAP_PATIENCE + Duration::from_secs(3)).await;
        }
    }

    /// Whether an instance is indexed or acknowledged and on its way (a read error counts as
    /// unknown: the claim under the lock in [`Index::accept`] decides).
    fn known(&self, sop_instance_uid: &Uid) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight set poisoned")
            .contains_key(&key_of(sop_instance_uid.as_str()))
            || self
                .catalog
                .records_with(&UidLookup::instance(sop_instance_uid))
                .is_ok_and(|records| !records.is_empty())
    }

    /// Offers one DICOM instance (Part-10 bytes or a bare data set) to the index; answers once it
    /// is durable, a duplicate, a non-image object, or refused.
    pub async fn accept(&self, dicom: Vec<u8>) -> Result<AcceptOutcome, IndexError> {
        self.accept_with(dicom, None).await
    }

    /// [`Index::accept`] for an instance its receiver has already parsed from `dicom` under the
    /// index's limits (the DICOM listener does, to check it against its command): it is not
    /// parsed again.
    pub async fn accept_parsed(
        &self,
        dicom: Vec<u8>,
        parsed: Instance,
    ) -> Result<AcceptOutcome, IndexError> {
        self.accept_with(dicom, Some(parsed)).await
    }

    /// Why no new work can be taken now, if so: indexing keeps failing, or the data folder's
    /// free space (less `incoming` bytes) is below its floor.
    pub fn refuses_work(&self, incoming: u64) -> Option<Refusal> {
        if let Some(reason) = self.health.fault() {
            return Some(Refusal::Unavailable(format!(
                "indexing is failing ({reason}); nothing new is accepted until it recovers by \
                 itself, retry later"
            )));
        }
        if self.min_free_bytes == 0 {
            return None;
        }
        match fs4::statvfs(&self.dir) {
            Ok(stats) if stats.available_space() < self.min_free_bytes.saturating_add(incoming) => {
                Some(Refusal::DiskFull(format!(
                    "the data folder's disk has {} MiB free, below the {} MiB kept free \
                     ([index] min_free_bytes); free space or grow the disk, then retry",
                    stats.available_space() >> 20,
                    self.min_free_bytes >> 20
                )))
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "the data folder's free space cannot be read");
                None
            }
        }
    }

    async fn accept_with(
        &self,
        dicom: Vec<u8>,
        parsed: Option<Instance>,
    ) -> Result<AcceptOutcome, IndexError> {
        if self.is_closing() {
            return Err(IndexError::Stopped);
        }
        // Refused before anything is examined or written.
        if let Some(refusal) = self.refuses_work(dicom.len() as u64) {
            return Ok(AcceptOutcome::Refused {
                sop_instance_uid: None,
                refusal,
            });
        }
        let started = std::time::Instant::now();
        let mut watch = Stopwatch::start();
        // Parsing is CPU work: done in place, with the runtime told so.
        let refused = |error: ExamineError| AcceptOutcome::Refused {
            sop_instance_uid: None,
            refusal: Refusal::CannotUnderstand(error.to_string()),
        };
        let inspected = tokio::task::block_in_place(|| {
            let instance = match parsed {
                Some(instance) => instance,
                None => diptych_dicom_adapter::parse(&dicom, &self.limits)?,
            };
            let inspected = inspect(&instance, |sop| self.known(sop))?;
            Ok::<_, ExamineError>((instance, inspected))
        });
        watch.lap(&self.stages.examine);
        let (instance, header) = match inspected {
            Err(error) => return Ok(refused(error)),
            Ok((_, Inspected::NonImage)) => {
                self.counters.non_image.fetch_add(1, Ordering::Relaxed);
                return Ok(AcceptOutcome::NonImage);
            }
            Ok((_, Inspected::Duplicate(sop_instance_uid))) => {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(AcceptOutcome::Duplicate {
                    sop_instance_uid: sop_instance_uid.into_string(),
                });
            }
            Ok((instance, Inspected::Image(header))) => (instance, header),
        };
        let sop_instance_uid = header.metadata.sop_instance_uid.clone();
        // Room in the backlog before the acknowledgement: when indexing falls behind, the
        // sender waits here instead of memory filling with decoded frames. Taken before the
        // duplicate claim, so a copy is never answered for an original still waiting.
        let backlog = match self
            .backlog
            .clone()
            .acquire_many_owned(header.frames.clamp(1, self.max_backlog))
            .instrument(tracing::info_span!("queue", frames = header.frames))
            .await
        {
            Ok(permit) => permit,
            Err(_) => return Err(IndexError::Stopped),
        };
        watch.lap(&self.stages.backlog);
        // Claim the instance key before the log append so two concurrent copies cannot both go in.
        let (key, study) = in_flight_entry(&header.uids);
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight set poisoned");
            let indexed = match self
                .catalog
                .records_with(&UidLookup::instance(&header.uids.sop_instance))
            {
                Ok(records) => !records.is_empty(),
                Err(error) => {
                    return Ok(AcceptOutcome::Refused {
                        sop_instance_uid: Some(sop_instance_uid),
                        refusal: Refusal::OutOfResources(format!(
                            "the catalog cannot be read ({error}); retry later"
                        )),
                    });
                }
            };
            if indexed || in_flight.contains_key(&key) {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(AcceptOutcome::Duplicate { sop_instance_uid });
            }
            in_flight.insert(key, study);
        }
        watch.lap(&self.stages.claim);
        // The pixels are decoded on another thread while the log writes and syncs the bytes: a
        // DIMSE sender waits for each answer, and the two together take the longer of their
        // times, not their sum. An instance whose pixels turn out not to decode is refused and
        // its log entry skipped (a replay examines it again and skips it as well).
        let params = self.engine().manifest().preprocess;
        let decoding = tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("decode", frames = header.frames).entered();
            decode(&instance, *header, &params)
        });
        let appending = self
            .wal
            .append(WalRecord::Instance { dicom })
            .instrument(tracing::info_span!("store", to = "write-ahead log"));
        let (decoded, appended) = tokio::join!(decoding, appending);
        let decoded = decoded.unwrap_or_else(|panic| {
            tracing::error!(%panic, "decoding an instance panicked");
            Err(ExamineError::DecoderFailed)
        });
        if decoded.is_err() || appended.is_err() {
            self.in_flight
                .lock()
                .expect("in-flight set poisoned")
                .remove(&key);
        }
        let prepared = match (decoded, appended) {
            (Ok(prepared), Ok(seq)) => (prepared, seq),
            (Err(error), appended) => {
                if let Ok(seq) = appended {
                    // The entry is durable but holds nothing to apply: the worker moves past it.
                    self.counters.pending.fetch_add(1, Ordering::Relaxed);
                    self.work
                        .send(Work::Skip { seq })
                        .map_err(|_| IndexError::Stopped)?;
                }
                return Ok(AcceptOutcome::Refused {
                    sop_instance_uid: Some(sop_instance_uid),
                    refusal: Refusal::CannotUnderstand(error.to_string()),
                });
            }
            (Ok(_), Err(error)) => {
                tracing::error!(%error, "write-ahead log append failed");
                return Ok(AcceptOutcome::Refused {
                    sop_instance_uid: Some(sop_instance_uid),
                    refusal: Refusal::OutOfResources(format!(
                        "the instance could not be written durably ({error}); retry later"
                    )),
                });
            }
        };
        let (prepared, seq) = (Box::new(prepared.0), prepared.1);
        let slices = prepared.frames.len() as u32;
        let study_instance_uid = prepared.metadata.study_instance_uid.clone();
        let study = prepared.uids.study.clone();
        watch.lap(&self.stages.durable);
        self.stages.total.observe(started.elapsed().as_secs_f64());
        self.hand_over_late_when_injected().await;
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
        self.work
            .send(Work::Instance {
                seq,
                prepared,
                backlog: Some(backlog),
            })
            .map_err(|_| IndexError::Stopped)?;
        self.tracker.arrived(&study);
        Ok(AcceptOutcome::Accepted {
            sop_instance_uid,
            study_instance_uid,
            slices,
        })
    }
}
