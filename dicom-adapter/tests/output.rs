//! DICOM output to viewers: the Key Object Selection document for a received study, read back by
//! diptych and by dcmtk (dsr2xml, dcmdump), and sent by C-STORE to dcmtk's storescp.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::output::{
    Destination, DocumentUids, OutputError, ReferencedInstance, SimilarStudies, StudyIdentity,
    send_instance,
};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use diptych_dicom_adapter::{Limits, parse};

/// Phantom slices as DICOM instances, with the UIDs a real archive would hold.
fn phantom_instance(index: u64) -> diptych_dicom_adapter::Instance {
    let slice = PhantomGenerator::new(5, PhantomConfig::default()).slice(index);
    parse(
        &SyntheticInstance::from_phantom(&slice).to_part10(),
        &Limits::default(),
    )
    .unwrap()
}

/// The received study is phantom subject 0 (slices 0–15); the hits are two slices of subject 1
/// (one series) and one of subject 2, the first of them in two modes.
fn similar_studies() -> SimilarStudies {
    let received = phantom_instance(3).metadata();
    let hit = |index: u64, rank: u32, distance: f64, mode: &str| {
        let m = phantom_instance(index).metadata();
        ReferencedInstance {
            study_instance_uid: m.study_instance_uid,
            series_instance_uid: m.series_instance_uid,
            sop_class_uid: m.sop_class_uid,
            sop_instance_uid: m.sop_instance_uid,
            frame: None,
            rank,
            distance,
            mode: mode.to_string(),
        }
    };
    SimilarStudies {
        received: StudyIdentity {
            patient_id: received.patient_id,
            patient_name: Some("Phantom^Zero".to_string()),
            study_instance_uid: received.study_instance_uid,
            accession: Some("ACC-0".to_string()),
            study_date: "20240102".to_string(),
            study_id: "S0".to_string(),
        },
        title: "diptych: similar studies".to_string(),
        hits: vec![
            hit(17, 1, 101.25, "normal"),
            hit(18, 2, 130.5, "normal"),
            hit(40, 1, 7.0, "abnormal"),
            hit(17, 2, 9.5, "abnormal"),
        ],
    }
}

fn text(object: &InMemDicomObject, tag: Tag) -> String {
    object
        .get(tag)
        .unwrap_or_else(|| panic!("{tag} missing"))
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn items(object: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    object
        .get(tag)
        .unwrap_or_else(|| panic!("{tag} missing"))
        .items()
        .unwrap_or_else(|| panic!("{tag} is not a sequence"))
}

/// (value, scheme, meaning) of the single item of a code sequence.
fn code_of(object: &InMemDicomObject, tag: Tag) -> (String, String, String) {
    let [code] = items(object, tag) else {
        panic!("{tag} must hold one item")
    };
    (
        text(code, tags::CODE_VALUE),
        text(code, tags::CODING_SCHEME_DESIGNATOR),
        text(code, tags::CODE_MEANING),
    )
}

#[test]
fn the_key_object_files_under_the_received_study_and_references_every_hit() {
    let similar = similar_studies();
    let bytes = similar.key_object_part10().unwrap();
    let instance = parse(&bytes, &Limits::default()).unwrap();
    let kos: &InMemDicomObject = instance.object();

    assert_eq!(
        instance.sop_class_uid(),
        uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE
    );
    assert!(!instance.is_image());
    // Patient and study of the received study, so the viewer files it there.
    assert_eq!(text(kos, tags::PATIENT_ID), "PHANTOM-0000");
    assert_eq!(text(kos, tags::PATIENT_NAME), "Phantom^Zero");
    assert_eq!(
        text(kos, tags::STUDY_INSTANCE_UID),
        similar.received.study_instance_uid
    );
    assert_eq!(text(kos, tags::ACCESSION_NUMBER), "ACC-0");
    assert_eq!(text(kos, tags::STUDY_DATE), "20240102");
    assert_eq!(text(kos, tags::STUDY_ID), "S0");
    // A new KO series, with UIDs of its own.
    assert_eq!(text(kos, tags::MODALITY), "KO");
    let series = text(kos, tags::SERIES_INSTANCE_UID);
    assert!(series.starts_with("2.25."), "{series}");
    assert!(similar.hits.iter().all(|h| h.series_instance_uid != series));
    assert_ne!(series, instance.sop_instance_uid());
    assert_eq!(
        text(kos, tags::SERIES_DESCRIPTION),
        "diptych: similar studies"
    );
    assert_eq!(text(kos, tags::CONTENT_DATE).len(), 8);

    // SR document root: TID 2010, titled "Of Interest".
    assert_eq!(text(kos, tags::VALUE_TYPE), "CONTAINER");
    assert_eq!(
        code_of(kos, tags::CONCEPT_NAME_CODE_SEQUENCE),
        ("113000".into(), "DCM".into(), "Of Interest".into())
    );
    let [template] = items(kos, tags::CONTENT_TEMPLATE_SEQUENCE) else {
        panic!("one template")
    };
    assert_eq!(text(template, tags::TEMPLATE_IDENTIFIER), "2010");
    assert_eq!(text(template, tags::MAPPING_RESOURCE), "DCMR");

    // Content: the description, then one IMAGE per hit in order.
    let content = items(kos, tags::CONTENT_SEQUENCE);
    assert_eq!(content.len(), 1 + similar.hits.len());
    assert_eq!(text(&content[0], tags::VALUE_TYPE), "TEXT");
    assert_eq!(
        code_of(&content[0], tags::CONCEPT_NAME_CODE_SEQUENCE).0,
        "113012"
    );
    let description = text(&content[0], tags::TEXT_VALUE);
    assert!(
        description.contains("image 3: abnormal mode, rank 1, distance 7.0000"),
        "{description}"
    );
    for (item, hit) in content[1..].iter().zip(&similar.hits) {
        assert_eq!(text(item, tags::RELATIONSHIP_TYPE), "CONTAINS");
        assert_eq!(text(item, tags::VALUE_TYPE), "IMAGE");
        let [reference] = items(item, tags::REFERENCED_SOP_SEQUENCE) else {
            panic!("one reference per image")
        };
        assert_eq!(
            text(reference, tags::REFERENCED_SOP_INSTANCE_UID),
            hit.sop_instance_uid
        );
        assert_eq!(
            text(reference, tags::REFERENCED_SOP_CLASS_UID),
            hit.sop_class_uid
        );
    }

    // Evidence: every referenced instance once, grouped by study and series.
    let evidence = items(kos, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE);
    let listed: Vec<(String, String, Vec<String>)> = evidence
        .iter()
        .flat_map(|study| {
            let study_uid = text(study, tags::STUDY_INSTANCE_UID);
            items(study, tags::REFERENCED_SERIES_SEQUENCE)
                .iter()
                .map(move |series| {
                    let instances = items(series, tags::REFERENCED_SOP_SEQUENCE)
                        .iter()
                        .map(|i| text(i, tags::REFERENCED_SOP_INSTANCE_UID))
                        .collect();
                    (
                        study_uid.clone(),
                        text(series, tags::SERIES_INSTANCE_UID),
                        instances,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let h = &similar.hits;
    assert_eq!(
        listed,
        vec![
            (
                h[0].study_instance_uid.clone(),
                h[0].series_instance_uid.clone(),
                vec![h[0].sop_instance_uid.clone(), h[1].sop_instance_uid.clone()]
            ),
            (
                h[2].study_instance_uid.clone(),
                h[2].series_instance_uid.clone(),
                vec![h[2].sop_instance_uid.clone()]
            ),
        ]
    );
    assert_ne!(h[0].study_instance_uid, h[2].study_instance_uid);
}

#[test]
fn given_uids_are_kept_and_fresh_ones_differ_each_time() {
    let similar = similar_studies();
    let uids = DocumentUids {
        series_instance_uid: "2.25.1234".into(),
        sop_instance_uid: "2.25.5678".into(),
    };
    let kos = similar.key_object_with(&uids).unwrap();
    assert_eq!(text(&kos, tags::SERIES_INSTANCE_UID), "2.25.1234");
    assert_eq!(text(&kos, tags::SOP_INSTANCE_UID), "2.25.5678");
    assert_eq!(kos.meta().media_storage_sop_instance_uid(), "2.25.5678");

    let a = similar.key_object().unwrap();
    let b = similar.key_object().unwrap();
    assert_ne!(
        text(&a, tags::SOP_INSTANCE_UID),
        text(&b, tags::SOP_INSTANCE_UID)
    );
}

#[test]
fn a_frame_of_a_multi_frame_hit_is_referenced_in_its_image_item() {
    let mut similar = similar_studies();
    similar.hits.truncate(1);
    similar.hits[0].frame = Some(12);
    let kos = similar.key_object().unwrap();
    let image = &items(&kos, tags::CONTENT_SEQUENCE)[1];
    let reference = &items(image, tags::REFERENCED_SOP_SEQUENCE)[0];
    assert_eq!(text(reference, tags::REFERENCED_FRAME_NUMBER), "12");
}

#[test]
fn a_key_object_without_hits_or_with_a_malformed_uid_is_refused() {
    let mut similar = similar_studies();
    similar.hits.clear();
    let error = similar.key_object().unwrap_err();
    assert!(matches!(error, OutputError::NoHits { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&similar.received.study_instance_uid)
    );

    let mut similar = similar_studies();
    similar.hits[1].sop_instance_uid = "1.2..3".into();
    let error = similar.key_object().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("hit 2 SOP Instance UID \"1.2..3\""),
        "{error}"
    );
}

/// A scratch folder under the system temp folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("diptych-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dcmtk(tool: &str, args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (apt package dcmtk): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{tool} failed: {stderr}\n{stdout}");
    // Warnings about the tool's own limits are not findings about the document.
    const TOOL_LIMITS: [&str; 2] = [
        "VR checker does not support this Specific Character Set",
        "template constraints not yet supported",
    ];
    let findings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("E: ") || line.starts_with("W: "))
        .filter(|line| !TOOL_LIMITS.iter().any(|limit| line.contains(limit)))
        .collect();
    assert!(
        findings.is_empty(),
        "{tool} reported errors or warnings: {stderr}"
    );
    stdout
}

#[test]
fn dcmtk_reads_the_key_object_as_a_structured_report() {
    let similar = similar_studies();
    let scratch = Scratch::new("dsr2xml");
    let file = scratch.0.join("kos.dcm");
    std::fs::write(&file, similar.key_object_part10().unwrap()).unwrap();

    let xml = dcmtk("dsr2xml", &["-v".as_ref(), file.as_os_str()]);
    assert!(xml.contains("Of Interest"), "{xml}");
    assert!(xml.contains("Key Object Description"), "{xml}");
    for hit in &similar.hits {
        assert!(
            xml.contains(&hit.sop_instance_uid),
            "{} not in the XML",
            hit.sop_instance_uid
        );
    }
    let dump = dcmtk("dcmdump", &[file.as_os_str()]);
    assert!(
        dump.contains("=KeyObjectSelectionDocumentStorage"),
        "{dump}"
    );
    assert!(dump.contains("[KO]"), "{dump}");
    // dsrdump checks the document against the SR IOD and template constraints it knows.
    let tree = dcmtk(
        "dsrdump",
        &["-v".as_ref(), "+Pc".as_ref(), file.as_os_str()],
    );
    assert!(tree.contains("Key Object Selection Document"), "{tree}");
    assert_eq!(
        tree.matches("<contains IMAGE:").count(),
        similar.hits.len(),
        "{tree}"
    );
}

/// dcmtk's storescp on a free local port, killed on drop.
struct StoreScp {
    child: Child,
    addr: SocketAddr,
}

impl StoreScp {
    fn start(output: &Path, extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("storescp")
            .args(extra)
            .args(["-aet", "VIEWER", "-od"])
            .arg(output)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("storescp (apt package dcmtk) must be installed");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "storescp did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }

    fn destination(&self) -> Destination {
        Destination {
            addr: self.addr,
            called_ae: "VIEWER".into(),
            calling_ae: "DIPTYCH".into(),
        }
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The only file storescp wrote in `folder`.
fn received_file(folder: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

#[tokio::test]
async fn the_key_object_is_stored_by_storescp() {
    let scratch = Scratch::new("store-kos");
    let scp = StoreScp::start(&scratch.0, &[]);
    let kos = similar_studies().key_object_part10().unwrap();

    let status = send_instance(&scp.destination(), &kos, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status, 0x0000);

    let file = received_file(&scratch.0);
    let dump = dcmtk("dcmdump", &[file.as_os_str()]);
    assert!(
        dump.contains("(0008,0016) UI =KeyObjectSelectionDocumentStorage"),
        "{dump}"
    );
    let sent = parse(&kos, &Limits::default()).unwrap();
    let stored = parse(&std::fs::read(&file).unwrap(), &Limits::default()).unwrap();
    assert_eq!(stored.sop_class_uid(), "1.2.840.10008.5.1.4.1.1.88.59");
    assert_eq!(stored.sop_instance_uid(), sent.sop_instance_uid());
    assert_eq!(
        items(stored.object(), tags::CONTENT_SEQUENCE).len(),
        items(sent.object(), tags::CONTENT_SEQUENCE).len()
    );
}

#[tokio::test]
async fn an_image_travels_in_small_fragments_re_encoded_as_implicit_vr() {
    let scratch = Scratch::new("store-image");
    // Implicit VR only, and PDUs of at most 4096 bytes: the 61 KB image takes ~15 fragments.
    let scp = StoreScp::start(&scratch.0, &["+xi", "-pdu", "4096"]);
    let slice = PhantomGenerator::new(5, PhantomConfig::default()).slice(21);
    let bytes = SyntheticInstance::from_phantom(&slice).to_part10();

    let status = send_instance(&scp.destination(), &bytes, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status, 0x0000);

    let stored = parse(
        &std::fs::read(received_file(&scratch.0)).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(stored.transfer_syntax(), uids::IMPLICIT_VR_LITTLE_ENDIAN);
    let sent = parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(stored.sop_instance_uid(), sent.sop_instance_uid());
    assert_eq!(
        stored.decode_frame(0).unwrap().values,
        sent.decode_frame(0).unwrap().values
    );
}

#[tokio::test]
async fn a_destination_that_is_not_listening_is_named_in_the_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let destination = Destination {
        addr: ([127, 0, 0, 1], port).into(),
        called_ae: "VIEWER".into(),
        calling_ae: "DIPTYCH".into(),
    };
    let kos = similar_studies().key_object_part10().unwrap();
    let error = send_instance(&destination, &kos, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, OutputError::Associate { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("VIEWER@127.0.0.1:{port}")),
        "{error}"
    );
}

#[tokio::test]
async fn a_destination_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold the connection without a word.
    let holder = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let destination = Destination {
        addr,
        called_ae: "VIEWER".into(),
        calling_ae: "DIPTYCH".into(),
    };
    let kos = similar_studies().key_object_part10().unwrap();
    let started = Instant::now();
    let error = send_instance(&destination, &kos, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(error, OutputError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
}

#[tokio::test]
async fn bytes_that_are_not_dicom_are_refused_before_connecting() {
    let destination = Destination {
        addr: ([127, 0, 0, 1], 9).into(),
        called_ae: "VIEWER".into(),
        calling_ae: "DIPTYCH".into(),
    };
    let error = send_instance(
        &destination,
        b"not a dicom file at all",
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, OutputError::InvalidInstance { .. }),
        "{error}"
    );
}
