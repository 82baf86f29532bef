//! Exact search equals the naive scan, bit for bit: random codebooks (with repeated vectors, so
//! distances tie), random codes with heavy duplicates, random deletions, filters and
//! exclusions, every mode and grouping, random k and thread counts, with and without a
//! (possibly stale) search index.

use diptych_service::record::{RecordKeys, RecordSet};
use diptych_service::search::{
    Corpus, DistanceTables, Exclude, GroupScore, Grouping, Hit, Mode, QueryCodes, SearchIndex,
    SearchRequest, naive_search, search_with_threads,
};
use proptest::prelude::*;

/// A random world: codebooks, records, keys, deletions, filter.
#[derive(Debug, Clone)]
struct World {
    size: usize,
    dim: usize,
    positions: usize,
    normal_book: Vec<f32>,
    abnormal_book: Vec<f32>,
    normal: Vec<u8>,
    abnormal: Vec<u8>,
    keys: Vec<RecordKeys>,
    deleted: Vec<u32>,
    filter: Option<Vec<u32>>,
}

fn world() -> impl Strategy<Value = World> {
    (
        1usize..=12,
        1usize..=4,
        prop_oneof![Just(1usize), Just(8), Just(13), Just(40)],
        0usize..=260,
    )
        .prop_flat_map(|(size, dim, positions, n)| {
            // Small integers: repeated vectors and exact ties are common.
            let book = prop::collection::vec((-3i8..=3).prop_map(|v| v as f32 * 0.5), size * dim);
            let prototypes =
                prop::collection::vec(prop::collection::vec(0..size as u8, 2 * positions), 1..=4);
            // Each record: a prototype, a few positions changed.
            let records = prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    prop::collection::vec((any::<prop::sample::Index>(), 0..size as u8), 0..=3),
                ),
                n,
            );
            let keys = prop::collection::vec((0u64..6, 0u64..3), n);
            let deleted = prop::collection::vec(0..(n as u32 + 1), 0..=n / 3 + 1);
            let filter = prop::option::of(prop::collection::vec(0..(n as u32 + 1), 0..=n + 1));
            (
                Just((size, dim, positions)),
                book.clone(),
                book,
                prototypes,
                records,
                keys,
                deleted,
                filter,
            )
        })
        .prop_map(
            |(
                (size, dim, positions),
                normal_book,
                abnormal_book,
                prototypes,
                records,
                keys,
                deleted,
                filter,
            )| {
                let mut normal = Vec::new();
                let mut abnormal = Vec::new();
                for (proto, changes) in &records {
                    let mut codes = proto.get(&prototypes).clone();
                    for (at, code) in changes {
                        codes[at.index(2 * positions)] = *code;
                    }
                    normal.extend_from_slice(&codes[..positions]);
                    abnormal.extend_from_slice(&codes[positions..]);
                }
                let keys = keys
                    .iter()
                    .enumerate()
                    .map(|(i, &(series, study))| RecordKeys {
                        patient: study,
                        study,
                        series: study * 10 + series,
                        instance: i as u64 / 2,
                        frame: i as u32 % 2,
                    })
                    .collect();
                World {
                    size,
                    dim,
                    positions,
                    normal_book,
                    abnormal_book,
                    normal,
                    abnormal,
                    keys,
                    deleted,
                    filter,
                }
            },
        )
}

fn request() -> impl Strategy<Value = (Mode, Grouping, GroupScore, usize, Option<Exclude>)> {
    let weight = prop_oneof![Just(0.0f32), Just(0.5), Just(1.0), Just(2.5)];
    let mode = prop_oneof![
        Just(Mode::Normal),
        Just(Mode::Abnormal),
        (weight.clone(), weight).prop_map(|(n, a)| Mode::Combined {
            normal_weight: n,
            abnormal_weight: a
        }),
    ];
    let grouping = prop_oneof![
        Just(Grouping::Instance),
        Just(Grouping::Series),
        Just(Grouping::Study)
    ];
    let score = prop_oneof![
        Just(GroupScore::BestSlice),
        (1u32..=5).prop_map(GroupScore::MeanOfBestN)
    ];
    let exclude = prop::option::of(prop_oneof![
        (0u64..130).prop_map(Exclude::Instance),
        (0u64..30).prop_map(Exclude::Series),
        (0u64..3).prop_map(Exclude::Study),
    ]);
    (
        mode,
        grouping,
        score,
        prop_oneof![1usize..=12, Just(1000)],
        exclude,
    )
}

/// Hits as bits, so that equality means identical floating-point values.
fn bits(hits: &[Hit]) -> Vec<(u32, u64, u64, u64, u32)> {
    hits.iter()
        .map(|h| {
            (
                h.record,
                h.distance.to_bits(),
                h.normal_distance.to_bits(),
                h.abnormal_distance.to_bits(),
                h.group_slices,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fast_search_equals_the_naive_scan(
        w in world(),
        (mode, grouping, group_score, top_k, exclude) in request(),
        query_from in any::<prop::sample::Index>(),
        query_codes in any::<prop::sample::Index>(),
        threads in 1usize..=4,
        indexed in 0usize..=3,
    ) {
        let tables = DistanceTables::new(&w.normal_book, &w.abnormal_book, w.size, w.dim).unwrap();
        let n = w.keys.len();
        // Query: an indexed record's codes, or random codes.
        let query = if n > 0 && query_from.index(2) == 0 {
            let r = query_from.index(n);
            QueryCodes {
                normal: w.normal[r * w.positions..(r + 1) * w.positions].to_vec(),
                abnormal: w.abnormal[r * w.positions..(r + 1) * w.positions].to_vec(),
            }
        } else {
            let seed = query_codes.index(1 << 20);
            QueryCodes {
                normal: (0..w.positions).map(|p| ((seed + p * 7) % w.size) as u8).collect(),
                abnormal: (0..w.positions).map(|p| ((seed / 3 + p) % w.size) as u8).collect(),
            }
        };
        let deleted: RecordSet = w.deleted.iter().copied().collect();
        let filter: Option<RecordSet> = w.filter.as_ref().map(|f| f.iter().copied().collect());
        let keys = |id: u32| w.keys[id as usize];
        let corpus = Corpus {
            normal: &w.normal,
            abnormal: &w.abnormal,
            positions: w.positions,
            keys: &keys,
            deleted: &deleted,
            filter: filter.as_ref(),
        };
        // No index; an index of every record; of a prefix (stale); or grown by extend.
        let p = w.positions;
        let index = match indexed {
            0 => None,
            1 => Some(SearchIndex::build(&tables, p, &w.normal, &w.abnormal)),
            2 => {
                let half = n / 2 * p;
                Some(SearchIndex::build(&tables, p, &w.normal[..half], &w.abnormal[..half]))
            }
            _ => {
                let mut index = SearchIndex::build(&tables, p, &[], &[]);
                for m in [n / 3, n / 2, n] {
                    index.extend(&tables, &w.normal[..m * p], &w.abnormal[..m * p]);
                }
                prop_assert_eq!(index.len(), n);
                Some(index)
            }
        };
        let request = SearchRequest { query, mode, grouping, group_score, top_k, exclude };
        let naive = naive_search(&tables, &corpus, &request).unwrap();
        let fast = search_with_threads(&tables, index.as_ref(), &corpus, &request, threads).unwrap();
        prop_assert_eq!(bits(&fast), bits(&naive));
        // The answer is sorted and never returns a record it must not.
        for pair in naive.windows(2) {
            prop_assert!((pair[0].distance, pair[0].record) < (pair[1].distance, pair[1].record));
        }
        for hit in &naive {
            prop_assert!(!deleted.contains(hit.record));
            prop_assert!(filter.as_ref().is_none_or(|f| f.contains(hit.record)));
            prop_assert!(exclude.is_none_or(|e| !e.excludes(&keys(hit.record))));
            prop_assert!(hit.group_slices >= 1);
        }
        prop_assert!(naive.len() <= top_k);
    }
}

/// Many near-duplicate records in a few clusters, where the index prunes most records: still
/// identical to the naive scan in every mode, filtered or not.
#[test]
fn clustered_records_give_identical_answers_in_every_mode() {
    let (size, dim, positions, n) = (64usize, 8usize, 64usize, 20_000usize);
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let normal_book: Vec<f32> = (0..size * dim)
        .map(|_| (next() % 1000) as f32 / 250.0)
        .collect();
    let abnormal_book: Vec<f32> = (0..size * dim)
        .map(|_| (next() % 1000) as f32 / 250.0)
        .collect();
    let centres: Vec<Vec<u8>> = (0..30)
        .map(|_| {
            (0..2 * positions)
                .map(|_| (next() % size as u32) as u8)
                .collect()
        })
        .collect();
    let mut normal = Vec::with_capacity(n * positions);
    let mut abnormal = Vec::with_capacity(n * positions);
    for _ in 0..n {
        let mut codes = centres[next() as usize % centres.len()].clone();
        for _ in 0..next() % 4 {
            let at = next() as usize % (2 * positions);
            codes[at] = (next() % size as u32) as u8;
        }
        normal.extend_from_slice(&codes[..positions]);
        abnormal.extend_from_slice(&codes[positions..]);
    }
    let tables = DistanceTables::new(&normal_book, &abnormal_book, size, dim).unwrap();
    let index = SearchIndex::build(&tables, positions, &normal, &abnormal);
    let keys = |id: u32| RecordKeys {
        study: id as u64 / 100,
        series: id as u64 / 20,
        instance: id as u64,
        ..RecordKeys::default()
    };
    let deleted: RecordSet = (0..n as u32).filter(|i| i % 17 == 0).collect();
    let tenth: RecordSet = (0..n as u32).filter(|i| i % 10 == 3).collect();
    for filter in [None, Some(&tenth)] {
        let corpus = Corpus {
            normal: &normal,
            abnormal: &abnormal,
            positions,
            keys: &keys,
            deleted: &deleted,
            filter,
        };
        for q in 0..6 {
            let mut query = QueryCodes {
                normal: centres[q][..positions].to_vec(),
                abnormal: centres[q + 6][positions..].to_vec(),
            };
            query.normal[q] = (q % size) as u8;
            for mode in [
                Mode::Normal,
                Mode::Abnormal,
                Mode::Combined {
                    normal_weight: 0.0,
                    abnormal_weight: 0.0,
                },
                Mode::Combined {
                    normal_weight: 0.3,
                    abnormal_weight: 2.0,
                },
            ] {
                for grouping in [Grouping::Instance, Grouping::Series, Grouping::Study] {
                    let request = SearchRequest {
                        query: query.clone(),
                        mode,
                        grouping,
                        group_score: if q % 2 == 0 {
                            GroupScore::BestSlice
                        } else {
                            GroupScore::MeanOfBestN(3)
                        },
                        top_k: [1, 10, 100][q % 3],
                        exclude: (q == 4).then_some(Exclude::Study(7)),
                    };
                    let naive = naive_search(&tables, &corpus, &request).unwrap();
                    let fast =
                        search_with_threads(&tables, Some(&index), &corpus, &request, 2).unwrap();
                    assert_eq!(bits(&fast), bits(&naive), "{mode:?} {grouping:?} query {q}");
                    assert_eq!(naive.len(), request.top_k.min(naive.len()));
                    assert!(!naive.is_empty());
                }
            }
        }
    }
}

#[test]
fn invalid_requests_name_what_is_wrong() {
    let tables = DistanceTables::new(&[0.0, 1.0], &[0.0, 2.0], 2, 1).unwrap();
    let normal = vec![0u8, 1, 1, 0];
    let keys = |_| RecordKeys::default();
    let none = RecordSet::default();
    let corpus = Corpus {
        normal: &normal,
        abnormal: &normal,
        positions: 2,
        keys: &keys,
        deleted: &none,
        filter: None,
    };
    let good = SearchRequest {
        query: QueryCodes {
            normal: vec![0, 1],
            abnormal: vec![1, 1],
        },
        mode: Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight: 1.0,
        },
        grouping: Grouping::Instance,
        group_score: GroupScore::BestSlice,
        top_k: 10,
        exclude: None,
    };
    let hits = naive_search(&tables, &corpus, &good).unwrap();
    // Record 0 equals the query's normal code (d_n 0) and is 1 from its abnormal code (d_a 4).
    assert_eq!(hits[0].record, 0);
    assert_eq!(
        (
            hits[0].normal_distance,
            hits[0].abnormal_distance,
            hits[0].distance
        ),
        (0.0, 4.0, 4.0)
    );
    for (bad, needle) in [
        (
            SearchRequest {
                top_k: 0,
                ..good.clone()
            },
            "top_k",
        ),
        (
            SearchRequest {
                top_k: 1001,
                ..good.clone()
            },
            "top_k",
        ),
        (
            SearchRequest {
                group_score: GroupScore::MeanOfBestN(0),
                ..good.clone()
            },
            "group_best_n",
        ),
        (
            SearchRequest {
                mode: Mode::Combined {
                    normal_weight: -1.0,
                    abnormal_weight: 1.0,
                },
                ..good.clone()
            },
            "normal_weight",
        ),
        (
            SearchRequest {
                mode: Mode::Combined {
                    normal_weight: 1.0,
                    abnormal_weight: f32::NAN,
                },
                ..good.clone()
            },
            "abnormal_weight",
        ),
        (
            SearchRequest {
                query: QueryCodes {
                    normal: vec![0],
                    abnormal: vec![0, 0],
                },
                ..good.clone()
            },
            "positions",
        ),
        (
            SearchRequest {
                query: QueryCodes {
                    normal: vec![0, 0],
                    abnormal: vec![0, 2],
                },
                ..good.clone()
            },
            "outside the codebook",
        ),
    ] {
        let err = search_with_threads(&tables, None, &corpus, &bad, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
        assert_eq!(
            naive_search(&tables, &corpus, &bad)
                .unwrap_err()
                .to_string(),
            err
        );
    }
}
