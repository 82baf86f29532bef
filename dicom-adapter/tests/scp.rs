//! The DICOM listener against real peers: dcmtk's echoscu and storescu, GDCM's gdcmconv for
//! JPEG 2000 files, pynetdicom for concurrency, and dicom-ul's client and a raw socket for
//! hostile input. Every test binds port 0 and records what reaches the sink.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::scp::{
    self, AllowedCaller, AssociationEnd, AssociationReport, ReceivedInstance, ScpConfig,
    StoreOutcome, StoreSink,
};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};
use diptych_dicom_adapter::{Limits, parse};

// ---------------------------------------------------------------------------------------------
// The listener under test and its recording sink.

#[derive(Default)]
struct Recording {
    instances: Mutex<Vec<ReceivedInstance>>,
    /// Decode every frame of each image before answering, as the service does: an image that
    /// does not decode is answered 0xC000.
    decode: std::sync::atomic::AtomicBool,
    /// What the listener reported of each association that ended.
    reports: Mutex<Vec<AssociationReport>>,
    /// Connections dropped in the TLS handshake.
    refused: Mutex<Vec<scp::RefusedConnection>>,
}

impl Recording {
    fn take(&self) -> Vec<ReceivedInstance> {
        std::mem::take(&mut *self.instances.lock().unwrap())
    }
}

impl StoreSink for Recording {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn std::future::Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            // A bug in the service, simulated: it panics on one instance.
            if instance.sop_instance_uid.ends_with(".666") {
                panic!("a simulated bug while storing one instance");
            }
            let image = parse(&instance.part10, &Limits::default())
                .map(|i| i.is_image())
                .unwrap_or(false);
            if image && self.decode.load(std::sync::atomic::Ordering::Relaxed) {
                let decoded = instance.parsed.frame_count().and_then(|frames| {
                    (0..frames).try_for_each(|i| instance.parsed.decode_frame(i).map(|_| ()))
                });
                if let Err(error) = decoded {
                    return StoreOutcome::CannotUnderstand(error.to_string());
                }
            }
            self.instances.lock().unwrap().push(instance);
            if image {
                StoreOutcome::Stored
            } else {
                StoreOutcome::NonImage
            }
        })
    }

    fn connection_refused(&self, report: scp::RefusedConnection) {
        self.refused.lock().unwrap().push(report);
    }

    fn association_ended(&self, report: AssociationReport) {
        self.reports.lock().unwrap().push(report);
    }
}

struct Listener {
    addr: SocketAddr,
    sink: Arc<Recording>,
    stats: Arc<scp::ScpStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), scp::ScpError>>,
}

impl Listener {
    async fn start(config: ScpConfig) -> Self {
        // The listener's warnings (rejections, refusals, aborts) show in failing tests' output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let scp = scp::bind(config).await.expect("bind");
        let addr = scp.local_addr();
        let stats = scp.stats();
        let sink = Arc::new(Recording::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(scp.serve(sink.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            sink,
            stats,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the listener stops on shutdown")
            .unwrap()
            .unwrap();
    }

    /// echoscu against the listener, from `calling` AE; true when it succeeds.
    fn echo_as(&self, calling: &str) -> bool {
        Command::new("echoscu")
            .args(["-aet", calling, "-aec", "DIPTYCH", "-to", "10"])
            .arg("127.0.0.1")
            .arg(self.addr.port().to_string())
            .output()
            .expect("echoscu runs (apt-get install dcmtk)")
            .status
            .success()
    }

    fn assert_still_serving(&self, after: &str) {
        assert!(
            self.echo_as("ECHOSCU"),
            "the listener stopped answering echoscu after {after}"
        );
    }
}

/// The tests run one at a time: each starts listeners and peer processes, and on two cores the
/// 16-association load test beside the others starves pynetdicom's own threads until its
/// client-side DIMSE timeout fires (the listener's log shows every response sent).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

fn config() -> ScpConfig {
    ScpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(20),
        ..ScpConfig::default()
    }
}

fn tool(program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (apt-get install dcmtk libgdcm-tools): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diptych-scp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Phantom files.

/// Writes `count` phantom slices as 12-bit (values clamped to 4095) or 8-bit MR files.
fn write_phantoms(dir: &Path, count: u64, eight_bit: bool) -> Vec<PathBuf> {
    let generator = PhantomGenerator::new(41, PhantomConfig::default());
    (0..count)
        .map(|i| {
            let slice = generator.slice(i * 5 + 3);
            let mut instance = SyntheticInstance::from_phantom(&slice);
            let mut bits_stored = 12u16;
            if let StoredSamples::U16(samples) = &instance.samples {
                if eight_bit {
                    instance.samples = StoredSamples::U8(
                        samples.iter().map(|&v| (v.min(4095) / 16) as u8).collect(),
                    );
                    bits_stored = 8;
                } else {
                    instance.samples =
                        StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect());
                }
            }
            let mut object = instance.object();
            object.put(DataElement::new(
                tags::BITS_STORED,
                VR::US,
                PrimitiveValue::from(bits_stored),
            ));
            object.put(DataElement::new(
                tags::HIGH_BIT,
                VR::US,
                PrimitiveValue::from(bits_stored - 1),
            ));
            let path = dir.join(format!("slice{i}.dcm"));
            object.write_to_file(&path).unwrap();
            path
        })
        .collect()
}

/// Modality values of frame 0 of a Part-10 file, decoded by the adapter.
fn pixels_of(bytes: &[u8]) -> Vec<f32> {
    parse(bytes, &Limits::default())
        .expect("parses")
        .decode_frame(0)
        .expect("decodes")
        .values
}

fn sop_instance_of(path: &Path) -> String {
    parse(&std::fs::read(path).unwrap(), &Limits::default())
        .unwrap()
        .sop_instance_uid()
}

// ---------------------------------------------------------------------------------------------
// Tests with dcmtk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_is_answered() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    assert!(listener.echo_as("ECHOSCU"));
    listener.stop().await;
}

/// How a test folder is made and sent.
struct Syntax {
    name: &'static str,
    uid: &'static str,
    eight_bit: bool,
    /// Converter and its options (input and output paths are appended); None: as written.
    convert: Option<(&'static str, &'static [&'static str])>,
    /// storescu options choosing what it proposes; [`BY_DICOM_UL`] when storescu cannot
    /// propose the syntax (it has no option for JPEG process 14) and dicom-ul's client sends it.
    propose: &'static [&'static str],
    /// Largest mean absolute error allowed against the uncompressed pixels (0: lossless).
    mean_error: f32,
}

/// Marks a syntax sent by dicom-ul's client instead of storescu.
const BY_DICOM_UL: &[&str] = &["(dicom-ul client)"];

#[allow(deprecated)]
const SYNTAXES: &[Syntax] = &[
    Syntax {
        name: "explicit-le",
        uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
        eight_bit: false,
        convert: None,
        propose: &[],
        mean_error: 0.0,
    },
    Syntax {
        name: "implicit-le",
        uid: uids::IMPLICIT_VR_LITTLE_ENDIAN,
        eight_bit: false,
        convert: Some(("dcmconv", &["+ti"])),
        propose: &["-xi"],
        mean_error: 0.0,
    },
    Syntax {
        name: "explicit-be",
        uid: uids::EXPLICIT_VR_BIG_ENDIAN,
        eight_bit: false,
        convert: Some(("dcmconv", &["+tb"])),
        propose: &["-xb", "-R"],
        mean_error: 0.0,
    },
    Syntax {
        name: "deflated",
        uid: uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        eight_bit: false,
        convert: Some(("dcmconv", &["+td"])),
        propose: &["-xd", "-R"],
        mean_error: 0.0,
    },
    Syntax {
        name: "jpeg-baseline",
        uid: uids::JPEG_BASELINE8_BIT,
        eight_bit: true,
        convert: Some(("dcmcjpeg", &["+eb"])),
        propose: &["-xy", "-R"],
        mean_error: 1.5,
    },
    Syntax {
        name: "jpeg-extended",
        uid: uids::JPEG_EXTENDED12_BIT,
        eight_bit: true,
        convert: Some(("dcmcjpeg", &["+ee"])),
        propose: &["-xx", "-R"],
        mean_error: 1.5,
    },
    Syntax {
        name: "jpeg-lossless",
        uid: uids::JPEG_LOSSLESS,
        eight_bit: false,
        convert: Some(("dcmcjpeg", &["+el"])),
        propose: BY_DICOM_UL,
        mean_error: 0.0,
    },
    Syntax {
        name: "jpeg-lossless-sv1",
        uid: uids::JPEG_LOSSLESS_SV1,
        eight_bit: false,
        convert: Some(("dcmcjpeg", &["+e1"])),
        propose: &["-xs", "-R"],
        mean_error: 0.0,
    },
    Syntax {
        name: "jpeg-ls-lossless",
        uid: uids::JPEGLS_LOSSLESS,
        eight_bit: false,
        convert: Some(("dcmcjpls", &[])),
        propose: &["-xt", "-R"],
        mean_error: 0.0,
    },
    Syntax {
        name: "jpeg-ls-near-lossless",
        uid: uids::JPEGLS_NEAR_LOSSLESS,
        eight_bit: false,
        convert: Some(("dcmcjpls", &["+en"])),
        propose: &["-xu", "-R"],
        // NEAR = 2: every sample within 2 of the original.
        mean_error: 2.0,
    },
    Syntax {
        name: "rle",
        uid: uids::RLE_LOSSLESS,
        eight_bit: false,
        convert: Some(("dcmcrle", &[])),
        propose: &["-xr", "-R"],
        mean_error: 0.0,
    },
    Syntax {
        name: "j2k-lossless",
        uid: uids::JPEG2000_LOSSLESS,
        eight_bit: false,
        convert: Some(("gdcmconv", &["--j2k"])),
        propose: &["-xv", "-R"],
        mean_error: 0.0,
    },
    Syntax {
        name: "j2k-lossy",
        uid: uids::JPEG2000,
        eight_bit: false,
        convert: Some(("gdcmconv", &["--j2k", "--lossy", "-r", "5"])),
        propose: &["-xw", "-R"],
        mean_error: 5.0,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_delivers_every_decodable_transfer_syntax_with_its_pixels() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    let decodable = scp::decodable_transfer_syntaxes();
    let root = temp_dir("syntaxes");
    let sources = [false, true].map(|eight| {
        let dir = root.join(if eight { "src8" } else { "src12" });
        std::fs::create_dir_all(&dir).unwrap();
        write_phantoms(&dir, 3, eight)
    });
    let mut report = Vec::new();
    for syntax in SYNTAXES {
        let originals = &sources[usize::from(syntax.eight_bit)];
        let dir = root.join(syntax.name);
        std::fs::create_dir_all(&dir).unwrap();
        // Lossy encoders give the instance a new SOP Instance UID: expect the converted file's.
        let mut expected_uids = Vec::new();
        for original in originals {
            let target = dir.join(original.file_name().unwrap());
            match syntax.convert {
                None => {
                    std::fs::copy(original, &target).unwrap();
                }
                Some((program, options)) => {
                    let mut args: Vec<&str> = options.to_vec();
                    args.push(original.to_str().unwrap());
                    args.push(target.to_str().unwrap());
                    tool(program, &args);
                }
            }
            let written = dicom_object::open_file(&target).unwrap();
            assert_eq!(
                written.meta().transfer_syntax().trim_end_matches('\0'),
                syntax.uid,
                "{} wrote another syntax",
                syntax.name
            );
            let uid = written
                .element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap();
            expected_uids.push((uid.trim_end_matches('\0').to_string(), original.clone()));
        }
        let mut args: Vec<String> = ["-aet", "STORESCU", "-aec", "DIPTYCH", "-to", "20", "+sd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(syntax.propose.iter().map(|s| s.to_string()));
        args.extend([
            "127.0.0.1".to_string(),
            listener.addr.port().to_string(),
            dir.display().to_string(),
        ]);
        let sent = if syntax.propose == BY_DICOM_UL {
            let addr = listener.addr;
            let files: Vec<PathBuf> = expected_uids
                .iter()
                .map(|(_, o)| dir.join(o.file_name().unwrap()))
                .collect();
            let uid = syntax.uid;
            let statuses = tokio::task::spawn_blocking(move || {
                files
                    .iter()
                    .map(|file| {
                        let object = dicom_object::open_file(file).unwrap();
                        let instance = object
                            .element(tags::SOP_INSTANCE_UID)
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .trim_end_matches('\0')
                            .to_string();
                        let mut data_set = Vec::new();
                        object.write_dataset(&mut data_set).unwrap();
                        raw_store_in(addr, uids::MR_IMAGE_STORAGE, &instance, uid, &data_set).0
                    })
                    .collect::<Vec<u16>>()
            })
            .await
            .unwrap();
            let ok = statuses.iter().all(|&s| s == 0);
            std::process::Output {
                status: Command::new(if ok { "true" } else { "false" })
                    .status()
                    .unwrap(),
                stdout: Vec::new(),
                stderr: format!("statuses {statuses:04X?}").into_bytes(),
            }
        } else {
            Command::new("storescu")
                .args(&args)
                .output()
                .expect("storescu runs")
        };
        let received = listener.sink.take();

        if !decodable.iter().any(|uid| uid == syntax.uid) {
            // Not offered by this build: the context is refused and nothing arrives.
            assert!(
                received.is_empty(),
                "{}: undecodable syntax was accepted",
                syntax.name
            );
            assert!(
                !sent.status.success()
                    || String::from_utf8_lossy(&sent.stderr).contains("No presentation context"),
                "{}: storescu should fail without a presentation context",
                syntax.name
            );
            report.push(format!(
                "{}: refused (not decodable by this build)",
                syntax.name
            ));
            listener.assert_still_serving(syntax.name);
            continue;
        }
        assert!(
            sent.status.success(),
            "{}: storescu failed: {}",
            syntax.name,
            String::from_utf8_lossy(&sent.stderr)
        );
        assert_eq!(
            received.len(),
            originals.len(),
            "{}: instances received",
            syntax.name
        );
        let by_uid: HashMap<String, &ReceivedInstance> = received
            .iter()
            .map(|r| (r.sop_instance_uid.clone(), r))
            .collect();
        let mut worst = 0.0f32;
        for (uid, original) in &expected_uids {
            let got = by_uid[uid];
            assert_eq!(
                got.transfer_syntax, syntax.uid,
                "{}: negotiated syntax",
                syntax.name
            );
            assert!(["STORESCU", "RAWSCU"].contains(&got.calling_ae.as_str()));
            assert_eq!(got.sop_class_uid, uids::MR_IMAGE_STORAGE);
            let expected = pixels_of(&std::fs::read(original).unwrap());
            let actual = pixels_of(&got.part10);
            assert_eq!(actual.len(), expected.len());
            let mean = expected
                .iter()
                .zip(&actual)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / expected.len() as f32;
            worst = worst.max(mean);
            if syntax.mean_error == 0.0 {
                assert!(
                    expected == actual,
                    "{}: lossless pixels differ (mean error {mean})",
                    syntax.name
                );
            } else {
                assert!(
                    mean <= syntax.mean_error,
                    "{}: mean error {mean} > {}",
                    syntax.name,
                    syntax.mean_error
                );
            }
        }
        report.push(format!(
            "{}: {} instances, mean abs error {worst:.3}",
            syntax.name,
            received.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
    listener.stop().await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_fragmented_into_small_pdus_is_reassembled() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(ScpConfig {
        max_pdu_length: 4096,
        ..config()
    })
    .await;
    let dir = temp_dir("fragments");
    let files = write_phantoms(&dir, 2, false);
    tool(
        "storescu",
        &[
            "-aet",
            "STORESCU",
            "-aec",
            "DIPTYCH",
            "--max-pdu",
            "4096",
            "+sd",
            "127.0.0.1",
            &listener.addr.port().to_string(),
            dir.to_str().unwrap(),
        ],
    );
    let received = listener.sink.take();
    assert_eq!(received.len(), 2);
    for file in &files {
        let got = received
            .iter()
            .find(|r| r.sop_instance_uid == sop_instance_of(file))
            .unwrap();
        assert_eq!(
            pixels_of(&got.part10),
            pixels_of(&std::fs::read(file).unwrap())
        );
    }
    listener.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Concurrency with pynetdicom.

fn python() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME is set");
    let python = Path::new(&home).join(".cache/diptych/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: create it with `python3 -m venv ~/.cache/diptych/py-venv && ~/.cache/diptych/py-venv/bin/pip install pynetdicom pydicom`",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_pynetdicom_associations_of_200_instances_all_arrive() {
    let _one_at_a_time = serial().await;
    const ASSOCIATIONS: usize = 16;
    const INSTANCES: usize = 200;
    // The production timeouts: on a loaded 2-core machine a peer process can stall for seconds.
    let listener = Listener::start(ScpConfig {
        read_timeout: ScpConfig::default().read_timeout,
        idle_timeout: ScpConfig::default().idle_timeout,
        ..config()
    })
    .await;
    let dir = temp_dir("concurrent");
    let template = &write_phantoms(&dir, 1, false)[0];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/scp_concurrent_store.py");
    let started = std::time::Instant::now();
    let output = Command::new(python())
        .arg(&script)
        .args(["127.0.0.1", &listener.addr.port().to_string(), "DIPTYCH"])
        .arg(template)
        .args([
            ASSOCIATIONS.to_string(),
            INSTANCES.to_string(),
            "2.25.7777".to_string(),
        ])
        .output()
        .expect("python runs");
    let seconds = started.elapsed().as_secs_f32();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pynetdicom load failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("the load script's last line is not JSON ({e}): {stdout}"));
    // Nothing is sent twice: every response reached its sender (the script fails otherwise).
    assert_eq!(report["sent"], ASSOCIATIONS * INSTANCES, "{report}");
    assert_eq!(report["stolen_responses"], 0, "{report}");
    let received = listener.sink.take();
    let uids: HashSet<&str> = received
        .iter()
        .map(|r| r.sop_instance_uid.as_str())
        .collect();
    assert_eq!(
        received.len(),
        ASSOCIATIONS * INSTANCES,
        "every acknowledged instance reached the sink once"
    );
    assert_eq!(uids.len(), ASSOCIATIONS * INSTANCES);
    for a in 1..=ASSOCIATIONS {
        for n in [1, INSTANCES] {
            assert!(uids.contains(format!("2.25.7777.{a}.{n}").as_str()));
        }
    }
    let sample = received
        .iter()
        .find(|r| r.sop_instance_uid == "2.25.7777.16.200")
        .unwrap();
    assert_eq!(
        pixels_of(&sample.part10),
        pixels_of(&std::fs::read(template).unwrap())
    );
    eprintln!(
        "{} instances over {ASSOCIATIONS} associations in {seconds:.1} s ({:.0}/s); {stdout}",
        received.len(),
        received.len() as f32 / seconds
    );
    listener.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken input.

/// A C-STORE-RQ command set (implicit VR little endian).
fn store_command(class: &str, instance: &str, message_id: u16) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, element: u16, value: &[u8]) {
        out.extend(0u16.to_le_bytes());
        out.extend(element.to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
        out.extend(value);
    }
    fn uid(text: &str) -> Vec<u8> {
        let mut bytes = text.as_bytes().to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        bytes
    }
    let mut body = Vec::new();
    put(&mut body, 0x0002, &uid(class));
    put(&mut body, 0x0100, &0x0001u16.to_le_bytes());
    put(&mut body, 0x0110, &message_id.to_le_bytes());
    put(&mut body, 0x0700, &0u16.to_le_bytes());
    put(&mut body, 0x0800, &0x0000u16.to_le_bytes());
    put(&mut body, 0x1000, &uid(instance));
    let mut out = Vec::new();
    put(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// Status and error comment of a response command set.
fn status_of(command: &[u8]) -> (u16, String) {
    let mut pos = 0;
    let (mut status, mut comment) = (None, String::new());
    while pos + 8 <= command.len() {
        let element = u16::from_le_bytes([command[pos + 2], command[pos + 3]]);
        let len = u32::from_le_bytes(command[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let value = &command[pos + 8..pos + 8 + len];
        match element {
            0x0900 => status = Some(u16::from_le_bytes([value[0], value[1]])),
            0x0902 => comment = String::from_utf8_lossy(value).trim().to_string(),
            _ => {}
        }
        pos += 8 + len;
    }
    (status.expect("response has a status"), comment)
}

/// Sends one C-STORE with raw data set bytes from dicom-ul's client (command split into three
/// fragments, data set into PDUs of the negotiated size) and returns the status and comment.
fn raw_store(addr: SocketAddr, class: &str, instance: &str, data_set: &[u8]) -> (u16, String) {
    raw_store_in(
        addr,
        class,
        instance,
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        data_set,
    )
}

/// [`raw_store`] on a presentation context for `transfer_syntax`.
fn raw_store_in(
    addr: SocketAddr,
    class: &str,
    instance: &str,
    transfer_syntax: &str,
    data_set: &[u8],
) -> (u16, String) {
    raw_stores_in(addr, class, transfer_syntax, &[(instance, data_set)])
        .pop()
        .expect("one response")
}

/// Several C-STOREs on one association (each command fragmented in three), one after the other;
/// returns each response's status and comment.
fn raw_stores_in(
    addr: SocketAddr,
    class: &str,
    transfer_syntax: &str,
    stores: &[(&str, &[u8])],
) -> Vec<(u16, String)> {
    let mut association = ClientAssociationOptions::new()
        .calling_ae_title("RAWSCU")
        .called_ae_title("DIPTYCH")
        .with_presentation_context(class, vec![transfer_syntax])
        .read_timeout(Duration::from_secs(20))
        .establish(addr)
        .expect("association");
    let context = association.presentation_contexts()[0].id;
    let mut responses = Vec::new();
    for (n, (instance, data_set)) in stores.iter().enumerate() {
        let command = store_command(class, instance, 9 + n as u16);
        let cut = [0, command.len() / 3, 2 * command.len() / 3, command.len()];
        for i in 0..3 {
            association
                .send(&Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: context,
                        value_type: PDataValueType::Command,
                        is_last: i == 2,
                        data: command[cut[i]..cut[i + 1]].to_vec(),
                    }],
                })
                .unwrap();
        }
        {
            let mut writer = association.send_pdata(context);
            writer.write_all(data_set).unwrap();
            writer.finish().unwrap();
        }
        let Pdu::PData { data } = association.receive().expect("a response") else {
            panic!("expected P-DATA");
        };
        responses.push(status_of(&data[0].data));
    }
    association.release().unwrap();
    responses
}

fn phantom_instance(seed: u64) -> (SyntheticInstance, String) {
    let slice = PhantomGenerator::new(5, PhantomConfig::default()).slice(seed);
    let instance = SyntheticInstance::from_phantom(&slice);
    let uid = instance
        .attributes
        .iter()
        .find(|(tag, _, _)| *tag == tags::SOP_INSTANCE_UID)
        .unwrap()
        .2
        .clone();
    (instance, uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_instances_get_the_right_status_and_the_listener_keeps_serving() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    let addr = listener.addr;
    let (instance, uid) = phantom_instance(1);
    let good = instance.to_bare_data_set();
    let class = uids::MR_IMAGE_STORAGE;

    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = {
        // Truncated: the last 100 bytes of pixel data are missing.
        let truncated = good[..good.len() - 100].to_vec();
        // Pixel data shorter than Rows × Columns declare: Rows doubled.
        let mut object = instance.object();
        object.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(instance.rows * 2),
        ));
        let mut short_pixels = Vec::new();
        object.write_dataset(&mut short_pixels).unwrap();
        // Wrong VR: Rows written as LO text.
        let mut object = instance.object();
        object.put(DataElement::new(tags::ROWS, VR::LO, "many"));
        let mut wrong_vr = Vec::new();
        object.write_dataset(&mut wrong_vr).unwrap();
        vec![
            (
                "truncated file",
                truncated,
                uid.as_str(),
                0xC000,
                "declares",
            ),
            (
                "pixel data shorter than declared",
                short_pixels,
                uid.as_str(),
                0xC000,
                "Pixel Data holds",
            ),
            ("wrong VR", wrong_vr, uid.as_str(), 0xC000, "Rows"),
            (
                "data set UID differs from the command's",
                good.clone(),
                "2.25.1234",
                0xA900,
                "Instance UID differs",
            ),
        ]
    };
    for (name, bytes, command_uid, expected, comment_part) in cases {
        let command_uid = command_uid.to_string();
        let (status, comment) =
            tokio::task::spawn_blocking(move || raw_store(addr, class, &command_uid, &bytes))
                .await
                .unwrap();
        assert_eq!(status, expected, "{name}: status {status:#06X} ({comment})");
        assert!(
            comment.contains(comment_part),
            "{name}: error comment {comment:?} should say why"
        );
        assert!(comment.len() <= 64);
        assert!(listener.sink.take().is_empty(), "{name}: reached the sink");
        listener.assert_still_serving(name);
    }
    // And a good instance on the same path is stored, its command fragmented in three.
    let (status, _) = tokio::task::spawn_blocking(move || raw_store(addr, class, &uid, &good))
        .await
        .unwrap();
    assert_eq!(status, 0x0000);
    let stored = listener.sink.take();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        pixels_of(&stored[0].part10),
        pixels_of(&instance.to_part10())
    );
    // The listener's counters saw every status it sent, and no association is left open.
    let sent = |service, status| listener.stats.responses_with(service, status);
    use scp::DimseService::{CEcho, CStore};
    assert_eq!(
        (
            sent(CStore, 0xC000),
            sent(CStore, 0xA900),
            sent(CStore, 0x0000),
            sent(CEcho, 0x0000)
        ),
        (3, 1, 1, 4)
    );
    // The listener ends an association just after answering its release.
    let since = std::time::Instant::now();
    while listener.stats.associations_open() > 0 && since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listener.stats.associations_open(), 0);
    assert_eq!(listener.stats.associations_accepted(), 9);
    listener.stop().await;
}

/// Issue #10: UIDs that would change a catalog query, or are just not UIDs, in the command or
/// in the data set, are answered 0xC000 with a comment naming the attribute and the rule (not
/// the value); none reaches the sink and the listener keeps serving. A padded UID and one with
/// a leading zero are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uids_answer_c000_and_the_listener_keeps_serving() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    let addr = listener.addr;
    let class = uids::MR_IMAGE_STORAGE;
    let hostile: Vec<String> = [
        "1.2\" OR study_instance_uid:*",
        "x\" OR *",
        "1.2:3",
        "1.(2)",
        "*",
        "1.2.\u{e9}",
        "1..2",
        ".1",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["1".repeat(10_000)])
    .collect();
    for (i, uid) in hostile.iter().enumerate() {
        let shown: String = uid.chars().take(32).collect();
        let (instance, good_uid) = phantom_instance(10 + i as u64);
        // In the command (and the data set, so that they agree).
        let mut in_both = instance.clone();
        in_both.set(tags::SOP_INSTANCE_UID, VR::UI, uid.clone());
        let cases = [
            (
                "command",
                uid.clone(),
                in_both.to_bare_data_set(),
                "Affected SOP Instance UID (0000,1000) is",
            ),
            {
                let mut study = instance.clone();
                study.set(tags::STUDY_INSTANCE_UID, VR::UI, uid.clone());
                (
                    "data set",
                    good_uid.clone(),
                    study.to_bare_data_set(),
                    "StudyInstanceUID (0020,000D) is",
                )
            },
            {
                let mut series = instance.clone();
                series.set(tags::SERIES_INSTANCE_UID, VR::UI, uid.clone());
                (
                    "data set",
                    good_uid.clone(),
                    series.to_bare_data_set(),
                    "SeriesInstanceUID (0020,000E) is",
                )
            },
        ];
        for (place, command_uid, bytes, named) in cases {
            let (status, comment) =
                tokio::task::spawn_blocking(move || raw_store(addr, class, &command_uid, &bytes))
                    .await
                    .unwrap();
            assert_eq!(
                status, 0xC000,
                "{shown:?} in the {place}: status {status:#06X} ({comment})"
            );
            assert!(comment.starts_with(named), "{shown:?}: {comment:?}");
            assert!(
                !comment.contains(" OR "),
                "the value is echoed: {comment:?}"
            );
            assert!(
                listener.sink.take().is_empty(),
                "{shown:?} reached the sink"
            );
        }
    }
    listener.assert_still_serving("hostile UIDs");
    // Padding is stripped and a leading zero kept, in the command and the data set.
    let (mut instance, _) = phantom_instance(40);
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, "2.25.0123".to_string());
    let bytes = instance.to_bare_data_set();
    let (status, comment) =
        tokio::task::spawn_blocking(move || raw_store(addr, class, "2.25.0123 ", &bytes))
            .await
            .unwrap();
    assert_eq!(status, 0x0000, "{comment}");
    let stored = listener.sink.take();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sop_instance_uid, "2.25.0123");
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdu_claiming_4_gib_is_aborted_without_buffering_it() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    let addr = listener.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // An A-ASSOCIATE-RQ header claiming 4 GiB - 1, then a few bytes of it.
        socket
            .write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01])
            .unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert_eq!(
        answer.first(),
        Some(&0x07),
        "an A-ABORT PDU comes back, got {answer:?}"
    );
    listener.assert_still_serving("a 4 GiB PDU header");

    // The same after association: a P-DATA-TF claiming 4 GiB.
    let answer = tokio::task::spawn_blocking(move || {
        let mut association = ClientAssociationOptions::new()
            .calling_ae_title("RAWSCU")
            .called_ae_title("DIPTYCH")
            .with_abstract_syntax(uids::VERIFICATION)
            .read_timeout(Duration::from_secs(10))
            .establish(addr)
            .unwrap();
        association
            .inner_stream()
            .write_all(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
            .unwrap();
        association.receive()
    })
    .await
    .unwrap();
    assert!(matches!(answer, Ok(Pdu::AbortRQ { .. })), "{answer:?}");
    listener.assert_still_serving("a 4 GiB P-DATA header");
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_transfer_syntax_is_refused_per_context() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    let addr = listener.addr;
    let contexts = tokio::task::spawn_blocking(move || {
        let association = ClientAssociationOptions::new()
            .calling_ae_title("RAWSCU")
            .called_ae_title("DIPTYCH")
            .with_presentation_context(uids::CT_IMAGE_STORAGE, vec!["1.2.3.4.5.6.7"])
            .with_presentation_context(
                uids::CT_IMAGE_STORAGE,
                vec!["1.2.3.4.5.6.7", uids::IMPLICIT_VR_LITTLE_ENDIAN],
            )
            .establish(addr)
            .unwrap();
        let contexts = association.presentation_contexts().to_vec();
        association.release().unwrap();
        contexts
    })
    .await
    .unwrap();
    assert_eq!(
        contexts.len(),
        1,
        "only the context with a known syntax is accepted: {contexts:?}"
    );
    assert_eq!(contexts[0].transfer_syntax, uids::IMPLICIT_VR_LITTLE_ENDIAN);

    listener.assert_still_serving("an unknown transfer syntax");
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_off_the_allow_list_and_wrong_called_titles_are_rejected() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(ScpConfig {
        allowed_callers: vec![
            AllowedCaller {
                ae_title: "ECHOSCU".to_string(),
                host: None,
            },
            AllowedCaller {
                ae_title: "LOCALONLY".to_string(),
                host: Some("127.0.0.1".parse().unwrap()),
            },
            AllowedCaller {
                ae_title: "ELSEWHERE".to_string(),
                host: Some("10.1.2.3".parse().unwrap()),
            },
        ]
        .into(),
        ..config()
    })
    .await;
    assert!(listener.echo_as("ECHOSCU"));
    assert!(listener.echo_as("LOCALONLY"));
    assert!(
        !listener.echo_as("STRANGER"),
        "a calling AE off the list is rejected"
    );
    assert!(
        !listener.echo_as("ELSEWHERE"),
        "a calling AE from another host is rejected"
    );
    let wrong_called = Command::new("echoscu")
        .args([
            "-aet",
            "ECHOSCU",
            "-aec",
            "ORTHANC",
            "127.0.0.1",
            &listener.addr.port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        !wrong_called.status.success(),
        "a wrong called AE title is rejected"
    );
    assert!(
        String::from_utf8_lossy(&wrong_called.stderr).contains("Called AE Title Not Recognized"),
        "{}",
        String::from_utf8_lossy(&wrong_called.stderr)
    );
    listener.assert_still_serving("rejections");
    assert_eq!(
        listener.stats.associations_rejected(),
        3,
        "a stranger, another host, a wrong called AE"
    );
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_associations_a_transient_reject_is_sent() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(ScpConfig {
        max_associations: 2,
        ..config()
    })
    .await;
    let addr = listener.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let open = |name: &str| {
            ClientAssociationOptions::new()
                .calling_ae_title(name)
                .called_ae_title("DIPTYCH")
                .with_abstract_syntax(uids::VERIFICATION)
                .establish(addr)
        };
        let first = open("ONE").unwrap();
        let second = open("TWO").unwrap();
        let third = open("THREE");
        first.release().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let fourth = open("FOUR");
        second.release().unwrap();
        (
            third.map(|_| ()).map_err(|e| format!("{e:?}")),
            fourth.map(|a| a.release().is_ok()),
        )
    })
    .await
    .unwrap();
    let rejected = outcome.0.unwrap_err();
    assert!(
        rejected.contains("Transient"),
        "third association: {rejected}"
    );
    assert!(
        matches!(outcome.1, Ok(true)),
        "a slot freed by a release is reused"
    );
    listener.stop().await;
}

/// 12-bit lossy JPEG (process 4, dcmcjpeg +ee on 12-bit data): decoded through GDCM's 12-bit
/// IJG library when this build has it (module `jpeg12`), its pixels close to the original's;
/// refused 0xC000 naming the precision before it is acknowledged otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_bit_lossy_jpeg_is_decoded_when_the_build_has_gdcms_12_bit_library() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    listener
        .sink
        .decode
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let addr = listener.addr;
    let dir = temp_dir("jpeg12");
    let original = write_phantoms(&dir, 1, false).remove(0);
    let compressed = dir.join("jpeg12.dcm");
    tool(
        "dcmcjpeg",
        &[
            "+ee",
            original.to_str().unwrap(),
            compressed.to_str().unwrap(),
        ],
    );
    let object = dicom_object::open_file(&compressed).unwrap();
    assert_eq!(
        object.meta().transfer_syntax().trim_end_matches('\0'),
        uids::JPEG_EXTENDED12_BIT
    );
    let uid = object
        .element(tags::SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    let mut data_set = Vec::new();
    object.write_dataset(&mut data_set).unwrap();
    let (status, comment) = tokio::task::spawn_blocking(move || {
        raw_store_in(
            addr,
            uids::MR_IMAGE_STORAGE,
            &uid,
            uids::JPEG_EXTENDED12_BIT,
            &data_set,
        )
    })
    .await
    .unwrap();
    let received = listener.sink.take();
    if diptych_dicom_adapter::jpeg12::available() {
        assert_eq!(status, 0, "{comment}");
        assert_eq!(received.len(), 1);
        let expected = pixels_of(&std::fs::read(&original).unwrap());
        let actual = pixels_of(&received[0].part10);
        assert_eq!(actual.len(), expected.len());
        let mean = expected
            .iter()
            .zip(&actual)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / expected.len() as f32;
        let peak = expected.iter().copied().fold(0.0f32, f32::max);
        eprintln!("12-bit lossy JPEG: mean abs error {mean:.3} (values up to {peak})");
        assert!(peak > 1000.0, "the phantom uses the 12-bit range");
        assert!(mean < 8.0, "mean abs error {mean}");
    } else {
        assert_eq!(status, 0xC000, "{comment}");
        assert!(comment.contains("12-bit"), "{comment}");
        assert!(received.is_empty());
    }
    listener.assert_still_serving("12-bit lossy JPEG");
    listener.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// DICOM over TLS.

/// A test CA and, signed by it, a server and a client certificate (PEM files in `dir`).
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=diptych test CA",
    ]);
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"),
        )
        .unwrap();
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_over_mutual_tls_is_answered_and_plain_tcp_is_not() {
    let _one_at_a_time = serial().await;
    let dir = temp_dir("tls");
    certificates(&dir);
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    // TLS only: `local_addr` is the TLS port.
    let listener = Listener::start(ScpConfig {
        plain: false,
        tls_addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(scp::TlsConfig {
            cert_pem: read("server.crt"),
            key_pem: read("server.key"),
            client_ca_pem: Some(read("ca.crt")),
        }),
        ..config()
    })
    .await;
    let port = listener.addr.port().to_string();
    let echo_tls = |key: &str, cert: &str| {
        Command::new("echoscu")
            .current_dir(&dir)
            .args([
                "-aet",
                "ECHOSCU",
                "-aec",
                "DIPTYCH",
                "-to",
                "10",
                "+tls",
                key,
                cert,
                "+cf",
                "ca.crt",
                "127.0.0.1",
                &port,
            ])
            .output()
            .unwrap()
    };
    let secure = echo_tls("client.key", "client.crt");
    assert!(
        secure.status.success(),
        "echoscu over TLS: {}",
        String::from_utf8_lossy(&secure.stderr)
    );
    // A client certificate not signed by the configured CA is refused in the handshake.
    let self_signed = echo_tls("ca.key", "ca.crt");
    assert!(
        !self_signed.status.success(),
        "a CA certificate used as a client certificate must be refused"
    );
    assert!(
        !listener.echo_as("ECHOSCU"),
        "plain TCP must not reach a TLS listener"
    );
    let again = echo_tls("client.key", "client.crt");
    assert!(
        again.status.success(),
        "the TLS listener keeps serving after refusals"
    );
    assert_eq!(
        listener.stats.tls_handshake_failures(),
        2,
        "the bad certificate and the plain association are counted"
    );
    assert_eq!(listener.sink.refused.lock().unwrap().len(), 2);

    // Neither plain nor TLS: refused at bind.
    let err = scp::bind(ScpConfig {
        plain: false,
        ..config()
    })
    .await
    .err()
    .expect("a listener without a port is refused");
    assert!(err.to_string().contains("nothing would listen"), "{err}");

    // Unusable PEM is a clear configuration error at bind time.
    let err = scp::bind(ScpConfig {
        tls: Some(scp::TlsConfig {
            cert_pem: b"not a certificate".to_vec(),
            key_pem: read("server.key"),
            client_ca_pem: None,
        }),
        ..config()
    })
    .await
    .err()
    .expect("bad PEM is refused");
    assert!(err.to_string().contains("certificate"), "{err}");
    listener.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_storing_one_instance_answers_it_0xc000_and_the_association_goes_on() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    let addr = listener.addr;
    let class = uids::MR_IMAGE_STORAGE;
    let mut instances = Vec::new();
    for (seed, uid) in [(1, "2.25.1001"), (2, "2.25.1002.666"), (3, "2.25.1003")] {
        let (mut instance, _) = phantom_instance(seed);
        instance.set(tags::SOP_INSTANCE_UID, VR::UI, uid.to_string());
        instances.push((uid, instance.to_bare_data_set()));
    }
    let responses = tokio::task::spawn_blocking(move || {
        let stores: Vec<(&str, &[u8])> =
            instances.iter().map(|(u, b)| (*u, b.as_slice())).collect();
        raw_stores_in(addr, class, uids::EXPLICIT_VR_LITTLE_ENDIAN, &stores)
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = responses.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        vec![0x0000, 0xC000, 0x0000],
        "the instance that hit the bug is refused, the others on the same association stored: {responses:?}"
    );
    assert!(responses[1].1.contains("unexpected"), "{responses:?}");
    let stored: Vec<String> = listener
        .sink
        .take()
        .into_iter()
        .map(|i| i.sop_instance_uid)
        .collect();
    assert_eq!(stored, vec!["2.25.1001", "2.25.1003"]);
    listener.assert_still_serving("after a panic in the sink");
    listener.stop().await;
}

// ---------------------------------------------------------------------------------------------
// What real archives send (#10).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_objects_over_pynetdicom_get_success_or_a_clear_refusal() {
    let _one_at_a_time = serial().await;
    let listener = Listener::start(config()).await;
    listener
        .sink
        .decode
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let dir = temp_dir("archive");
    let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/archive_objects.py");
    let output = Command::new(python())
        .args(["-W", "ignore"])
        .arg(&generator)
        .arg(&dir)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // (file, status, stored as an image to index)
    let expected: &[(&str, u16, Option<bool>)] = &[
        ("rgb.dcm", 0, Some(true)),
        ("rgb_planar.dcm", 0, Some(true)),
        ("ybr_full.dcm", 0, Some(true)),
        ("ybr_full_planar.dcm", 0, Some(true)),
        ("ybr_full_422.dcm", 0, Some(true)),
        ("palette8_lut16.dcm", 0, Some(true)),
        ("palette8_lut8.dcm", 0, Some(true)),
        ("palette16_lut16.dcm", 0, Some(true)),
        ("palette_segmented.dcm", 0xC000, None),
        ("seg.dcm", 0, Some(false)),
        ("rtdose.dcm", 0, Some(false)),
        ("rtplan.dcm", 0, Some(false)),
        ("sr.dcm", 0, Some(false)),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/store_files.py");
    let output = Command::new(python())
        .args(["-W", "ignore"])
        .arg(&script)
        .args(["127.0.0.1", &listener.addr.port().to_string(), "DIPTYCH"])
        .args(expected.iter().map(|(file, _, _)| dir.join(file)))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "store_files.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let statuses: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON line");
    let received = listener.sink.take();
    for (file, status, image) in expected {
        let got = &statuses[file];
        assert_eq!(got["status"], *status as i64, "{file}: {got}");
        if *status != 0 {
            assert!(
                got["comment"].as_str().unwrap().contains("Palette"),
                "{file}: {got}"
            );
        }
        let uid = dicom_object::open_file(dir.join(file))
            .unwrap()
            .element(tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        let stored = received.iter().find(|r| r.sop_instance_uid == uid);
        assert_eq!(stored.map(|r| r.parsed.is_image()), *image, "{file}");
    }
    listener.assert_still_serving("archive objects");
    listener.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The audit hook: an association's end is reported once with its titles, peer, instances and
/// the statuses sent by code; a rejected association is reported with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_association_is_reported_when_it_ends() {
    let _one_at_a_time = serial().await;
    let mut config = config();
    config.allowed_callers = vec![AllowedCaller {
        ae_title: "RAWSCU".to_string(),
        host: None,
    }]
    .into();
    let listener = Listener::start(config).await;
    let addr = listener.addr;
    let (instance, uid) = phantom_instance(2);
    let good = instance.to_bare_data_set();
    let statuses = tokio::task::spawn_blocking(move || {
        raw_stores_in(
            addr,
            uids::MR_IMAGE_STORAGE,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            &[(uid.as_str(), &good[..]), ("2.25.1234", &good[..])],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        statuses.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0x0000, 0xA900]
    );
    assert!(!listener.echo_as("STRANGER"), "off the allow-list");
    let reports = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let reports = listener.sink.reports.lock().unwrap().clone();
            if reports.len() >= 2 || std::time::Instant::now() > deadline {
                break reports;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(reports.len(), 2, "{reports:?}");
    let stored = &reports[0];
    assert_eq!(
        (stored.calling_ae.as_str(), stored.called_ae.as_str()),
        ("RAWSCU", "DIPTYCH")
    );
    assert_eq!(stored.instances_received, 2);
    assert_eq!(
        stored
            .statuses
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [(0x0000, 1), (0xA900, 1)]
    );
    assert_eq!(stored.end, AssociationEnd::Released);
    assert!(stored.peer.ip().is_loopback());
    let rejected = &reports[1];
    assert_eq!(rejected.calling_ae, "STRANGER");
    assert_eq!(rejected.instances_received, 0);
    assert!(
        matches!(rejected.end, AssociationEnd::Rejected(_)),
        "{rejected:?}"
    );
    listener.stop().await;
}
