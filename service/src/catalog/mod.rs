//! The metadata catalog: each record's DICOM metadata in a tantivy index, for filtering
//! searches and for showing their hits.
//!
//! One document per record (an indexed slice). Filters are query strings over the named fields
//! of [`Catalog::fields`] (see [`filter`] for the syntax); they are answered as a
//! [`RecordSet`] read from the `record` fast field, never from stored documents. Lookups by UID
//! ([`Catalog::records_with`] with a [`UidLookup`]) are term queries, never query strings. The
//! patient's birth date can be filtered on but is never stored nor returned.
//!
//! Writes follow the store: [`Catalog::add`] and [`Catalog::delete`] are pending until
//! [`Catalog::commit`], which records a [`Checkpoint`] (how far the write-ahead log has been
//! applied) in the same atomic commit, and makes the changes visible to filters before it
//! returns.
//!
//! A re-index's switch re-scores every record ([`Catalog::rescore`]): the new model's
//! abnormality scores, committed with the switch.

mod collect;
mod error;
mod fields;
pub mod filter;
mod lookup;
mod purge;
mod rescore;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::directory::MmapDirectory;
use tantivy::directory::error::LockError;
use tantivy::query::{TermQuery, TermSetQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError,
    Term,
};

use self::collect::{RecordFrames, RecordIds};
pub use self::error::CatalogError;
pub use self::fields::{CatalogEntry, FieldInfo, FieldKind, StoredRecord};
use self::fields::{
    FIELDS, Fields, INSTANCE_KEY, KEYWORD_TOKENIZER, PATIENT_KEY, SERIES_KEY, STUDY_KEY,
    keyword_analyzer,
};
use self::filter::FilterParser;
pub use self::lookup::{UidField, UidLookup};
use crate::record::{DeleteTarget, RecordId, RecordSet, key_of};

/// Memory the index writer buffers before it writes a segment.
const WRITER_MEMORY_BYTES: usize = 50_000_000;

/// How far the catalog has caught up with the write-ahead log, stored with each commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the last write-ahead-log entry applied to the catalog.
    pub applied_seq: u64,
    /// Number of records the store held at that point.
    pub records: u64,
    /// Which code store holds the serving model's codes (0: `codes/`, N: `codes-N/` after the
    /// N-th re-index); the commit that changes it is the moment a re-index switches models.
    #[serde(default)]
    pub generation: u32,
}

/// Distinct counts over the live records of the catalog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatalogCounts {
    /// Records (indexed slices).
    pub records: u64,
    /// Distinct SOP Instance UIDs.
    pub instances: u64,
    /// Distinct Series Instance UIDs.
    pub series: u64,
    /// Distinct Study Instance UIDs.
    pub studies: u64,
    /// Distinct Patient IDs (records without one count as one patient).
    pub patients: u64,
}

/// The metadata catalog of one data folder: a tantivy index with one writer and a reader that
/// is reloaded at each commit.
pub struct Catalog {
    index: Index,
    fields: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    parser: FilterParser,
    checkpoint: Mutex<Checkpoint>,
}

impl Catalog {
    /// Opens the catalog in `dir`, creating the folder and an empty catalog when absent. The
    /// writer buffers up to 50 MB on one thread. Fails when another process holds the
    /// catalog, or when it was written with other fields than this version defines.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|source| CatalogError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path: PathBuf = dir.to_owned();
        let open_error = |source: TantivyError| CatalogError::Open {
            path: path.clone(),
            source,
        };
        let fields = Fields::new();
        let directory = MmapDirectory::open(dir).map_err(|e| open_error(e.into()))?;
        let exists = Index::exists(&directory).map_err(|e| open_error(e.into()))?;
        let index = if exists {
            let index = Index::open(directory).map_err(open_error)?;
            if index.schema() != fields.schema {
                return Err(CatalogError::SchemaMismatch { path });
            }
            index
        } else {
            Index::create(directory, fields.schema.clone(), IndexSettings::default())
                .map_err(open_error)?
        };
        index
            .tokenizers()
            .register(KEYWORD_TOKENIZER, keyword_analyzer());
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| match e {
                TantivyError::LockFailure(LockError::LockBusy, _) => {
                    CatalogError::Locked { path: path.clone() }
                }
                e => open_error(e),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(open_error)?;
        let payload = index.load_metas().map_err(open_error)?.payload;
        let checkpoint = match payload {
            None => Checkpoint::default(),
            Some(payload) => serde_json::from_str(&payload)
                .map_err(|source| CatalogError::Checkpoint { payload, source })?,
        };
        let parser = FilterParser::new(&index);
        Ok(Catalog {
            index,
            fields,
            writer: Mutex::new(writer),
            reader,
            parser,
            checkpoint: Mutex::new(checkpoint),
        })
    }

    /// The filter vocabulary: every field a filter may name, with its kind and meaning (for
    /// the capabilities call).
    pub fn fields() -> Vec<FieldInfo> {
        FIELDS.to_vec()
    }

    /// Adds records; they become visible to filters at the next [`Catalog::commit`].
    pub fn add(&self, entries: &[CatalogEntry]) -> Result<(), CatalogError> {
        let writer = self.writer();
        for entry in entries {
            writer
                .add_document(self.fields.document(entry))
                .map_err(CatalogError::index("add a record"))?;
        }
        Ok(())
    }

    /// Deletes every record of the target and returns the ids of the committed records it
    /// matched, ascending. Only committed records are looked up: commit pending adds before a
    /// delete so they are visible (they are deleted all the same). The delete itself takes
    /// effect, durably, at the next [`Catalog::commit`].
    pub fn delete(&self, target: &DeleteTarget) -> Result<Vec<RecordId>, CatalogError> {
        if target.identifier().is_empty() {
            return Err(CatalogError::EmptyTarget {
                level: target.level(),
            });
        }
        let field = match target {
            DeleteTarget::Patient(_) => self.fields.patient_key,
            DeleteTarget::Study(_) => self.fields.study_key,
            DeleteTarget::Series(_) => self.fields.series_key,
            DeleteTarget::Instance(_) => self.fields.instance_key,
        };
        let term = Term::from_field_u64(field, key_of(target.identifier()));
        // Holding the writer keeps a commit from changing the committed view in between.
        let writer = self.writer();
        let query = TermQuery::new(term.clone(), IndexRecordOption::Basic);
        let mut ids = self
            .reader
            .searcher()
            .search(&query, &RecordIds)
            .map_err(CatalogError::index("find the records to delete"))?;
        ids.sort_unstable();
        writer.delete_term(term);
        Ok(ids)
    }

    /// Commits pending adds and deletes durably together with `checkpoint`, and makes them
    /// visible: a filter run after this returns sees them.
    pub fn commit(&self, checkpoint: Checkpoint) -> Result<(), CatalogError> {
        let payload = serde_json::to_string(&checkpoint).expect("a checkpoint serializes");
        let mut writer = self.writer();
        let mut prepared = writer
            .prepare_commit()
            .map_err(CatalogError::index("prepare a commit"))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(CatalogError::index("commit"))?;
        self.reader
            .reload()
            .map_err(CatalogError::index("reload its reader after a commit"))?;
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = checkpoint;
        Ok(())
    }

    /// Drops every add and delete since the last commit (after a failure, the apply worker
    /// redoes that work from the write-ahead log).
    pub fn roll_back(&self) -> Result<(), CatalogError> {
        self.writer()
            .rollback()
            .map_err(CatalogError::index("roll back to its last commit"))?;
        Ok(())
    }

    /// The checkpoint of the last commit; zeros for a catalog never committed.
    pub fn checkpoint(&self) -> Checkpoint {
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The committed records that pass a filter (syntax in [`filter`]); an empty or blank
    /// filter keeps every record. A malformed filter, or one naming an unknown field, is
    /// [`CatalogError::Filter`] with a message for the user.
    pub fn filter(&self, filter: &str) -> Result<RecordSet, CatalogError> {
        let query = self.parser.parse(filter)?;
        let ids = self
            .reader
            .searcher()
            .search(&*query, &RecordIds)
            .map_err(|e| match e {
                TantivyError::InvalidArgument(message) | TantivyError::SchemaError(message) => {
                    CatalogError::Filter(message)
                }
                e => CatalogError::Index {
                    operation: "run the filter",
                    source: e,
                },
            })?;
        let capacity = ids.iter().max().map_or(0, |&max| max as usize + 1);
        let mut set = RecordSet::with_capacity(capacity);
        for id in ids {
            set.insert(id);
        }
        Ok(set)
    }

    /// The committed records a lookup names — those whose UID field equals its UID (and of its
    /// frame, if it names one) — as `(record, frame)`, by frame then record; empty when none
    /// is indexed. A term query on the UID's field: exact, and nothing in the UID is parsed.
    pub fn records_with(
        &self,
        lookup: &UidLookup<'_>,
    ) -> Result<Vec<(RecordId, u32)>, CatalogError> {
        let query = lookup.query(&self.fields);
        let mut found = self
            .reader
            .searcher()
            .search(&*query, &RecordFrames)
            .map_err(CatalogError::index("look up records by UID"))?;
        found.sort_unstable_by_key(|&(record, frame)| (frame, record));
        Ok(found)
    }

    /// The displayable metadata of records, in the order asked; `None` for a record that is
    /// not in the committed catalog (never added, or deleted).
    pub fn entries(&self, records: &[RecordId]) -> Result<Vec<Option<StoredRecord>>, CatalogError> {
        let searcher = self.reader.searcher();
        let query = TermSetQuery::new(records.iter().map(|&r| self.fields.record_term(r)));
        let addresses = searcher
            .search(&query, &DocSetCollector)
            .map_err(CatalogError::index("find records to show"))?;
        let mut found = HashMap::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher
                .doc(address)
                .map_err(CatalogError::index("read a stored record"))?;
            let stored = self.fields.stored_record(&doc);
            found.insert(stored.record, stored);
        }
        Ok(records.iter().map(|r| found.get(r).cloned()).collect())
    }

    /// Distinct counts of the committed records, instances, series, studies and patients
    /// (a pass over the identifier keys' fast fields).
    pub fn counts(&self) -> Result<CatalogCounts, CatalogError> {
        let searcher = self.reader.searcher();
        let mut distinct: [HashSet<u64>; 4] = Default::default();
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let mut columns = Vec::with_capacity(4);
            for name in [INSTANCE_KEY, SERIES_KEY, STUDY_KEY, PATIENT_KEY] {
                columns.push(
                    fast.column_first_or_default::<u64>(name)
                        .map_err(CatalogError::index("read identifier keys"))?,
                );
            }
            for doc in segment.doc_ids_alive() {
                for (set, column) in distinct.iter_mut().zip(&columns) {
                    set.insert(column.get_val(doc));
                }
            }
        }
        let [instances, series, studies, patients] = distinct.map(|set| set.len() as u64);
        Ok(CatalogCounts {
            records: searcher.num_docs(),
            instances,
            series,
            studies,
            patients,
        })
    }

    /// The writer, also after a panic elsewhere left its lock poisoned (its state is
    /// tantivy's, which a panic in our code cannot corrupt).
    pub(super) fn writer(&self) -> MutexGuard<'_, IndexWriter> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("index", &self.index)
            .field("checkpoint", &self.checkpoint())
            .finish_non_exhaustive()
    }
}
