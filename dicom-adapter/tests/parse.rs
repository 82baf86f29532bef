//! Parsing: the forms of DICOM bytes accepted, and hostile bytes refused without a crash.

use dicom_dictionary_std::uids;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};
use diptych_dicom_adapter::{AdapterError, Limits, parse};

/// Parses with the default limits.
fn open(bytes: &[u8]) -> Result<diptych_dicom_adapter::Instance, AdapterError> {
    parse(bytes, &Limits::default())
}

fn small_instance() -> SyntheticInstance {
    let samples: Vec<u16> = (0..8 * 6).map(|v| v * 3).collect();
    SyntheticInstance::new(8, 6, StoredSamples::U16(samples), 42)
}

fn values_of(bytes: &[u8]) -> Vec<f32> {
    open(bytes).unwrap().decode_frame(0).unwrap().values
}

#[test]
fn part10_with_and_without_preamble_and_bare_data_sets_give_the_same_frame() {
    let instance = small_instance();
    let expected: Vec<f32> = (0..48).map(|v| (v * 3) as f32).collect();

    let file = instance.to_part10();
    assert_eq!(&file[128..132], b"DICM");
    assert_eq!(values_of(&file), expected);
    assert_eq!(
        values_of(&file[128..]),
        expected,
        "DICM without the preamble"
    );

    let bare = instance.to_bare_data_set();
    let parsed = open(&bare).unwrap();
    assert_eq!(parsed.transfer_syntax(), uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(
        parsed.sop_instance_uid(),
        open(&file).unwrap().sop_instance_uid()
    );
    assert_eq!(values_of(&bare), expected);

    // The same data set in implicit VR little endian, as some C-STORE peers send it.
    let implicit_ts = TransferSyntaxRegistry
        .get(uids::IMPLICIT_VR_LITTLE_ENDIAN)
        .unwrap();
    let mut implicit = Vec::new();
    instance
        .object()
        .write_dataset_with_ts(&mut implicit, implicit_ts)
        .unwrap();
    let parsed = open(&implicit).unwrap();
    assert_eq!(parsed.transfer_syntax(), uids::IMPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(values_of(&implicit), expected);
}

#[test]
fn short_and_foreign_bytes_are_refused_with_a_reason() {
    assert!(matches!(
        open(b"DIC"),
        Err(AdapterError::TooShort { len: 3 })
    ));
    let png_header = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\0\0\0\0";
    let err = open(png_header).unwrap_err();
    // Read as a bare data set, the PNG signature declares an element longer than the bytes.
    assert!(
        matches!(err, AdapterError::LengthBeyondData { .. }),
        "{err}"
    );
}

#[test]
fn a_truncated_file_is_an_error_not_a_crash() {
    let file = SyntheticInstance::from_phantom(
        &PhantomGenerator::new(2, PhantomConfig::default()).slice(1),
    )
    .to_part10();
    for cut in [140, 200, 400, file.len() / 2, file.len() - 1] {
        let outcome = open(&file[..cut]).and_then(|i| i.decode_frame(0));
        assert!(
            outcome.is_err(),
            "a file cut at {cut} of {} bytes must not decode",
            file.len()
        );
    }
}

#[test]
fn corrupted_bytes_never_escape_as_a_panic() {
    let file = small_instance().to_part10();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..400 {
        let mut bytes = file.clone();
        for _ in 0..1 + next() % 4 {
            let at = 128 + (next() as usize % (bytes.len() - 128));
            bytes[at] = next() as u8;
        }
        // Every outcome is fine except a panic (which would fail the test).
        match open(&bytes).and_then(|i| i.decode_frame(0)) {
            Ok(frame) => assert_eq!(frame.values.len(), frame.rows * frame.cols),
            Err(err) => {
                refused += 1;
                assert!(!err.to_string().is_empty());
            }
        }
    }
    assert!(refused > 0, "some corruptions must be detected");
}

#[test]
fn a_declared_length_beyond_the_bytes_is_refused_before_parsing() {
    let mut file = small_instance().to_part10();
    // Explicit VR little endian Pixel Data header: tag, "OW", 2 reserved bytes, 32-bit length.
    let header = file
        .windows(8)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0])
        .expect("pixel data header");
    file[header + 8..header + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let err = open(&file).unwrap_err();
    match err {
        AdapterError::LengthBeyondData {
            tag,
            declared,
            available,
        } => {
            assert_eq!(tag, "(7FE0,0010)");
            assert_eq!(declared, 0xFFFF_FFF0);
            assert_eq!(available, 8 * 6 * 2);
        }
        other => panic!("expected LengthBeyondData, got {other}"),
    }
}

#[test]
fn a_deflated_data_set_is_inflated_within_the_limit() {
    let instance = small_instance();
    let mut object = instance.object();
    let deflated_ts = TransferSyntaxRegistry
        .get(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
        .unwrap();
    object.meta_mut().set_transfer_syntax(deflated_ts);
    let mut file = Vec::new();
    object.write_all(&mut file).unwrap();
    assert!(
        !file.windows(4).any(|w| w == [0xE0, 0x7F, 0x10, 0x00]),
        "the data set is compressed"
    );

    let expected: Vec<f32> = (0..48).map(|v| (v * 3) as f32).collect();
    assert_eq!(values_of(&file), expected);

    let tight = Limits {
        max_inflated_bytes: 64,
        ..Limits::default()
    };
    let err = parse(&file, &tight).unwrap_err();
    assert!(
        matches!(err, AdapterError::InflatedTooLarge { limit: 64 }),
        "{err}"
    );
}
