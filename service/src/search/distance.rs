//! The summation order of a record's distance, shared by every path.
//!
//! Floating-point sums depend on their order. A record's distance in one codebook is defined as
//! the sum of its P table look-ups accumulated in [`LANES`] interleaved lanes (position p goes
//! to lane p mod 8, in increasing p), then folded by a fixed tree. [`position_sum`] writes that
//! definition plainly; [`position_sum_until`] computes the same value, faster, and may stop
//! early: all terms are ≥ 0, and rounding is monotone, so the folded partial sum after any
//! prefix of positions never exceeds the final value.

use super::tables::ROW;

/// Interleaved accumulators: independent chains let the processor overlap the look-ups.
pub const LANES: usize = 8;
/// Positions between two early-abandon checks.
const BLOCK: usize = 32;

/// Folds the lanes in the fixed order that defines the distance.
#[inline(always)]
fn fold(l: &[f32; LANES]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// A record's distance in one codebook: `Σ_p table[p][codes[p]]` in the defining order.
/// `table` holds P rows of [`ROW`] entries (a [`super::QueryTables`] half).
pub fn position_sum(table: &[f32], codes: &[u8]) -> f32 {
    let mut lanes = [0f32; LANES];
    for (p, &c) in codes.iter().enumerate() {
        lanes[p % LANES] += table[p * ROW + c as usize];
    }
    fold(&lanes)
}

/// The same value as [`position_sum`], or `None` as soon as `abandon(partial)` holds for the
/// partial sum after a block of positions (checked every 32 positions; the partial sum is a
/// lower bound of the final value).
#[inline(always)]
pub fn position_sum_until(
    table: &[f32],
    codes: &[u8],
    abandon: impl Fn(f32) -> bool,
) -> Option<f32> {
    let n = codes.len();
    assert!(table.len() >= n * ROW, "a query table row per position");
    let mut lanes = [0f32; LANES];
    let full = n / LANES * LANES;
    let mut p = 0;
    while p < full {
        let end = (p + BLOCK).min(full);
        while p < end {
            let group: &[u8; LANES] = codes[p..p + LANES].try_into().expect("8 codes");
            for l in 0..LANES {
                // SAFETY: p + l < n and a code is < 256 = ROW, so the index is below
                // n·ROW ≤ table.len(), asserted above.
                lanes[l] += unsafe { *table.get_unchecked((p + l) * ROW + group[l] as usize) };
            }
            p += LANES;
        }
        if p < n && abandon(fold(&lanes)) {
            return None;
        }
    }
    while p < n {
        lanes[p % LANES] += table[p * ROW + codes[p] as usize];
        p += 1;
    }
    Some(fold(&lanes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_sum_equals_the_definition_to_the_bit_for_any_grid_size() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for positions in [1usize, 7, 8, 33, 64, 100, 256] {
            let table: Vec<f32> = (0..positions * ROW)
                .map(|_| (next() % 100_000) as f32 * 1e-3)
                .collect();
            let codes: Vec<u8> = (0..positions).map(|_| next() as u8).collect();
            let slow = position_sum(&table, &codes);
            let fast = position_sum_until(&table, &codes, |_| false).unwrap();
            assert_eq!(slow.to_bits(), fast.to_bits(), "P = {positions}");
        }
    }

    #[test]
    fn abandons_only_once_the_partial_sum_passes_the_bound() {
        let positions = 256;
        let table = vec![1.0f32; positions * ROW];
        let codes = vec![0u8; positions];
        assert_eq!(
            position_sum_until(&table, &codes, |s| s > 300.0),
            Some(256.0)
        );
        assert_eq!(position_sum_until(&table, &codes, |s| s > 100.0), None);
    }
}
