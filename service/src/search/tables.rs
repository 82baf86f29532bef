//! Distance tables: because codes index fixed codebooks, `‖C[i] − C[j]‖²` is tabulated once per
//! codebook (K×K), and a query turns it into a P×256 look-up table (row p: the distances from
//! the query's code at position p to every code), so a record's distance is P look-ups.

use super::QueryCodes;
use crate::bundle::codebook::Codebooks;

/// Width of a query table row: one entry per possible `u8` code, so any stored code indexes a
/// row without a bounds check. Entries for codes ≥ K are 0 (the store never holds such codes).
pub const ROW: usize = 256;

/// The K×K tables of squared distances between the vectors of each codebook, with the
/// codebooks themselves (the [`super::SearchIndex`] projects them).
#[derive(Debug, Clone)]
pub struct DistanceTables {
    size: usize,
    dim: usize,
    normal_codebook: Vec<f32>,
    abnormal_codebook: Vec<f32>,
    normal: Vec<f32>,
    abnormal: Vec<f32>,
}

/// Why distance tables cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TablesError {
    /// K outside 1..=256, D of 0, or codebooks of the wrong length.
    #[error(
        "codebooks of {normal} and {abnormal} values do not hold K×D = {size}×{dim} (K must be 1..=256, D ≥ 1)"
    )]
    Shape {
        /// Values in the normal codebook.
        normal: usize,
        /// Values in the abnormal codebook.
        abnormal: usize,
        /// K.
        size: usize,
        /// D.
        dim: usize,
    },
    /// A codebook value that is not a finite number.
    #[error("the {0} codebook holds a value that is not a finite number")]
    NotFinite(&'static str),
}

impl DistanceTables {
    /// Tabulates the codebooks of a model bundle (see [`DistanceTables::new`]).
    pub fn of(codebooks: &Codebooks) -> Result<DistanceTables, TablesError> {
        DistanceTables::new(
            &codebooks.normal.values,
            &codebooks.abnormal.values,
            codebooks.normal.size,
            codebooks.normal.dim,
        )
    }

    /// Tabulates both codebooks (K vectors of dimension D each, row-major). Distances are
    /// computed in f64 and rounded once to f32.
    pub fn new(
        normal_codebook: &[f32],
        abnormal_codebook: &[f32],
        size: usize,
        dim: usize,
    ) -> Result<DistanceTables, TablesError> {
        if size == 0
            || size > ROW
            || dim == 0
            || normal_codebook.len() != size * dim
            || abnormal_codebook.len() != size * dim
        {
            return Err(TablesError::Shape {
                normal: normal_codebook.len(),
                abnormal: abnormal_codebook.len(),
                size,
                dim,
            });
        }
        for (name, book) in [("normal", normal_codebook), ("abnormal", abnormal_codebook)] {
            if book.iter().any(|v| !v.is_finite()) {
                return Err(TablesError::NotFinite(name));
            }
        }
        let table = |book: &[f32]| {
            let mut t = vec![0f32; size * size];
            for i in 0..size {
                for j in 0..size {
                    let a = &book[i * dim..(i + 1) * dim];
                    let b = &book[j * dim..(j + 1) * dim];
                    let d: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| {
                            let e = *x as f64 - *y as f64;
                            e * e
                        })
                        .sum();
                    t[i * size + j] = d as f32;
                }
            }
            t
        };
        Ok(DistanceTables {
            size,
            dim,
            normal: table(normal_codebook),
            abnormal: table(abnormal_codebook),
            normal_codebook: normal_codebook.to_vec(),
            abnormal_codebook: abnormal_codebook.to_vec(),
        })
    }

    /// Codebook size K.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Codebook vector dimension D.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The normal codebook, K×D row-major.
    pub fn normal_codebook(&self) -> &[f32] {
        &self.normal_codebook
    }

    /// The abnormal codebook, K×D row-major.
    pub fn abnormal_codebook(&self) -> &[f32] {
        &self.abnormal_codebook
    }

    /// `‖C_n[i] − C_n[j]‖²`.
    pub fn normal_distance(&self, i: u8, j: u8) -> f32 {
        self.normal[i as usize * self.size + j as usize]
    }

    /// `‖C_a[i] − C_a[j]‖²`.
    pub fn abnormal_distance(&self, i: u8, j: u8) -> f32 {
        self.abnormal[i as usize * self.size + j as usize]
    }

    /// The look-up tables of one query (codes must be < K; [`super::validate`] checks).
    pub fn query(&self, query: &QueryCodes) -> QueryTables {
        let rows = |table: &[f32], codes: &[u8]| {
            let mut out = vec![0f32; codes.len() * ROW];
            for (p, &c) in codes.iter().enumerate() {
                let src = &table[c as usize * self.size..(c as usize + 1) * self.size];
                out[p * ROW..p * ROW + self.size].copy_from_slice(src);
            }
            out
        };
        QueryTables {
            normal: rows(&self.normal, &query.normal),
            abnormal: rows(&self.abnormal, &query.abnormal),
        }
    }
}

/// A query's look-up tables: P rows of [`ROW`] distances per codebook.
#[derive(Debug, Clone)]
pub struct QueryTables {
    /// Row p, entry c: `‖C_n[q_p] − C_n[c]‖²`.
    pub normal: Vec<f32>,
    /// Row p, entry c: `‖C_a[q_p] − C_a[c]‖²`.
    pub abnormal: Vec<f32>,
}
