//! Lookups by UID: "the records whose Study (Series, SOP) Instance UID equals this UID",
//! optionally narrowed to one frame.
//!
//! A lookup takes a [`Uid`], never a string, and becomes a tantivy term query on the UID's own
//! field: no query text is parsed, so nothing a peer sent can change what is looked up. The UID
//! fields are indexed whole, as one token (the keyword tokenizer: tantivy's raw tokenizer and
//! a lowercaser, which leaves digits and dots as they are), so the term matches exactly the
//! records that carry that UID.
//!
//! For a client that can only send a filter (the montage of `diptych search`), [`UidLookup::to_filter`]
//! writes the same lookup in the filter language; a `Uid` holds only digits and dots, so the
//! quoted value cannot end early.

use diptych_dicom_adapter::Uid;
use tantivy::Term;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;

use super::fields::Fields;

/// A UID field of the catalog that a [`UidLookup`] can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UidField {
    /// Study Instance UID (0020,000D).
    Study,
    /// Series Instance UID (0020,000E).
    Series,
    /// SOP Instance UID (0008,0018).
    SopInstance,
}

impl UidField {
    /// The field's name in filters, e.g. `study_instance_uid`.
    pub fn name(self) -> &'static str {
        match self {
            UidField::Study => "study_instance_uid",
            UidField::Series => "series_instance_uid",
            UidField::SopInstance => "sop_instance_uid",
        }
    }
}

/// The records whose UID field equals a UID, optionally only those of one frame. Run it with
/// [`super::Catalog::records_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidLookup<'a> {
    field: UidField,
    uid: &'a Uid,
    frame: Option<u32>,
}

impl<'a> UidLookup<'a> {
    /// The records whose `field` equals `uid`.
    pub fn new(field: UidField, uid: &'a Uid) -> Self {
        UidLookup {
            field,
            uid,
            frame: None,
        }
    }

    /// The records of one study.
    pub fn study(uid: &'a Uid) -> Self {
        Self::new(UidField::Study, uid)
    }

    /// The records of one series.
    pub fn series(uid: &'a Uid) -> Self {
        Self::new(UidField::Series, uid)
    }

    /// The records (frames) of one instance.
    pub fn instance(uid: &'a Uid) -> Self {
        Self::new(UidField::SopInstance, uid)
    }

    /// Only the record of zero-based frame `frame`.
    pub fn frame(self, frame: u32) -> Self {
        UidLookup {
            frame: Some(frame),
            ..self
        }
    }

    /// The field looked up.
    pub fn field(&self) -> UidField {
        self.field
    }

    /// The UID looked up.
    pub fn uid(&self) -> &Uid {
        self.uid
    }

    /// The same lookup as a catalog filter (see [`super::filter`]), e.g.
    /// `sop_instance_uid:"1.2.3" AND frame:0`, for clients that send filters to the server.
    pub fn to_filter(&self) -> String {
        // A Uid is digits and dots only: nothing in it can close the quotes.
        let mut filter = format!("{}:\"{}\"", self.field.name(), self.uid);
        if let Some(frame) = self.frame {
            filter.push_str(&format!(" AND frame:{frame}"));
        }
        filter
    }

    /// The tantivy query: a term query on the UID's field, and on the frame when one is given.
    pub(crate) fn query(&self, fields: &Fields) -> Box<dyn Query> {
        // The index holds the UID lowercased (keyword tokenizer); digits and dots have no case.
        let uid = TermQuery::new(
            Term::from_field_text(fields.uid_field(self.field), self.uid.as_str()),
            IndexRecordOption::Basic,
        );
        match self.frame {
            None => Box::new(uid),
            Some(frame) => {
                let frame = TermQuery::new(fields.frame_term(frame), IndexRecordOption::Basic);
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, Box::new(uid) as Box<dyn Query>),
                    (Occur::Must, Box::new(frame)),
                ]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_quote_the_uid_and_add_the_frame() {
        let uid = Uid::parse("1.2.03.4").unwrap();
        assert_eq!(
            UidLookup::study(&uid).to_filter(),
            "study_instance_uid:\"1.2.03.4\""
        );
        assert_eq!(
            UidLookup::instance(&uid).frame(3).to_filter(),
            "sop_instance_uid:\"1.2.03.4\" AND frame:3"
        );
        assert_eq!(
            UidLookup::series(&uid).field().name(),
            "series_instance_uid"
        );
    }
}
