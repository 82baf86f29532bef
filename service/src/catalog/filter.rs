//! Filters: a query string over the catalog's named fields, parsed into a tantivy query, with
//! messages that tell the user what to fix.
//!
//! The syntax is tantivy's query language: `field:value` terms joined by `AND`, `OR`, `NOT`
//! (or `+` / `-`) with parentheses; terms side by side without an operator must all match;
//! ranges `field:[a TO b]`, `field:{a TO b}` (exclusive), `field:>x`, `>=`, `<`, `<=`; quoted
//! values (`series_description:"t2 flair"`) are phrases. Every term names a field, and only
//! the fields of [`super::FIELDS`] are accepted. A filter of negations only (`NOT
//! patient_sex:F`) keeps every record but the negated ones.

use tantivy::Index;
use tantivy::query::{AllQuery, Query, QueryParser, QueryParserError};
use tantivy::query_grammar::{self, Occur, UserInputAst, UserInputLeaf};

use super::error::CatalogError;
use super::fields::FIELDS;

/// Parses filters against one index's schema and tokenizers.
pub(crate) struct FilterParser {
    parser: QueryParser,
}

impl FilterParser {
    /// A parser for the catalog index: no default field (every term names one), and terms
    /// side by side must all match.
    pub fn new(index: &Index) -> FilterParser {
        let mut parser = QueryParser::for_index(index, Vec::new());
        parser.set_conjunction_by_default();
        FilterParser { parser }
    }

    /// The query of a filter string; an empty or blank filter keeps every record.
    pub fn parse(&self, filter: &str) -> Result<Box<dyn Query>, CatalogError> {
        if filter.trim().is_empty() {
            return Ok(Box::new(AllQuery));
        }
        let ast = query_grammar::parse_query(filter).map_err(|_| syntax_error(filter))?;
        check_fields(&ast)?;
        self.parser
            .build_query_from_user_input_ast(with_complements(ast))
            .map_err(|error| CatalogError::Filter(explain(error)))
    }
}

/// Gives every group of negations only an implicit "every record" to subtract from. tantivy
/// matches nothing for a group without a positive term, so without this `a AND NOT b` (parsed
/// as `+a +(-b)`) and `NOT patient_sex:F` would keep no record at all.
fn with_complements(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut clauses: Vec<_> = clauses
                .into_iter()
                .map(|(occur, clause)| (occur, with_complements(clause)))
                .collect();
            if !clauses.is_empty()
                && clauses
                    .iter()
                    .all(|(occur, _)| *occur == Some(Occur::MustNot))
            {
                let every_record = UserInputAst::Leaf(Box::new(UserInputLeaf::All));
                clauses.push((Some(Occur::Must), every_record));
            }
            UserInputAst::Clause(clauses)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(with_complements(*inner)), boost)
        }
        leaf @ UserInputAst::Leaf(_) => leaf,
    }
}

/// The names of the filter fields, for messages.
fn field_list() -> String {
    FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// A syntax error, with the grammar's own account of where it went wrong.
fn syntax_error(filter: &str) -> CatalogError {
    let (_, errors) = query_grammar::parse_query_lenient(filter);
    let detail = errors
        .iter()
        .map(|e| format!("{} at position {}", e.message, e.pos))
        .collect::<Vec<_>>()
        .join("; ");
    let detail = if detail.is_empty() {
        String::from("the query language does not accept it")
    } else {
        detail
    };
    CatalogError::Filter(format!(
        "syntax error in {filter:?}: {detail}. Write field:value terms joined by AND, OR, NOT \
         with parentheses, and ranges as field:[a TO b] or field:>x"
    ))
}

/// Rejects a term without a field and a field outside the vocabulary, naming the known fields.
fn check_fields(ast: &UserInputAst) -> Result<(), CatalogError> {
    match ast {
        UserInputAst::Clause(clauses) => clauses.iter().try_for_each(|(_, c)| check_fields(c)),
        UserInputAst::Boost(inner, _) => check_fields(inner),
        UserInputAst::Leaf(leaf) => {
            let field = match leaf.as_ref() {
                UserInputLeaf::Literal(literal) => literal.field_name.as_deref(),
                UserInputLeaf::All => return Ok(()),
                UserInputLeaf::Range { field, .. }
                | UserInputLeaf::Set { field, .. }
                | UserInputLeaf::Regex { field, .. } => field.as_deref(),
                UserInputLeaf::Exists { field } => Some(field.as_str()),
            };
            match field {
                None => Err(CatalogError::Filter(format!(
                    "the term {leaf:?} names no field; write field:value, with one of the \
                     fields {}",
                    field_list()
                ))),
                Some(name) if !FIELDS.iter().any(|f| f.name == name) => {
                    Err(CatalogError::Filter(format!(
                        "unknown field {name:?}; the catalog's fields are {}",
                        field_list()
                    )))
                }
                Some(_) => Ok(()),
            }
        }
    }
}

/// The parser's message, with what to do about it.
fn explain(error: QueryParserError) -> String {
    match &error {
        QueryParserError::ExpectedInt(e) => format!(
            "a value of an integer or date field is not an integer ({e}); dates are written \
             YYYYMMDD, e.g. study_date:[20190101 TO 20191231]"
        ),
        // tantivy's own message for this variant is wrong ("Only excluding terms given").
        QueryParserError::ExpectedFloat(e) => {
            format!("a value of a number field is not a number ({e}); write e.g. abnormality:>0.5")
        }
        QueryParserError::FieldDoesNotExist(_) | QueryParserError::FieldNotIndexed(_) => {
            format!("{error}; the catalog's fields are {}", field_list())
        }
        _ => error.to_string(),
    }
}
