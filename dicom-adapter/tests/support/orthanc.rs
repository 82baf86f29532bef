//! Orthanc from Debian (`/usr/sbin/Orthanc`, apt package `orthanc`) as a real archive for the
//! query/retrieve tests: a fresh SQLite index and storage in a scratch folder, C-FIND, C-GET and
//! C-MOVE allowed to any calling AE, the C-MOVE destinations given; killed on drop. Shared by
//! the adapter's and the service's tests (`#[path]`).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian package's binary.
pub const ORTHANC: &str = "/usr/sbin/Orthanc";

/// The DICOMweb plugin of the Debian package `orthanc-dicomweb`.
pub const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// A running Orthanc.
pub struct Orthanc {
    child: Child,
    /// Its DICOM port on 127.0.0.1.
    pub dicom: SocketAddr,
    /// Its HTTP (REST) port on 127.0.0.1.
    pub http: SocketAddr,
    /// Its AE title.
    pub ae_title: &'static str,
    folder: PathBuf,
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Orthanc {
    /// Starts Orthanc in `folder` (created), knowing each `(AE title, port)` of `modalities` on
    /// 127.0.0.1 as a C-MOVE destination; returns once its DICOM port accepts connections.
    pub fn start(folder: &Path, modalities: &[(&str, u16)]) -> Orthanc {
        Self::start_with(folder, modalities, false)
    }

    /// [`Orthanc::start`], with its DICOMweb plugin serving [`Orthanc::dicomweb_url`] when
    /// `dicomweb`.
    pub fn start_with(folder: &Path, modalities: &[(&str, u16)], dicomweb: bool) -> Orthanc {
        std::fs::create_dir_all(folder).unwrap();
        if dicomweb {
            assert!(
                Path::new(DICOMWEB_PLUGIN).is_file(),
                "Orthanc's DICOMweb plugin (apt package orthanc-dicomweb) must be installed: make deps-apt"
            );
        }
        let (dicom_port, http_port) = (free_port(), free_port());
        let known: serde_json::Map<String, serde_json::Value> = modalities
            .iter()
            .map(|(ae, port)| (ae.to_string(), serde_json::json!([ae, "127.0.0.1", port])))
            .collect();
        let config = serde_json::json!({
            "Name": "diptych-test-archive",
            "StorageDirectory": folder.join("storage"),
            "IndexDirectory": folder.join("index"),
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowGet": true,
            "DicomAlwaysAllowMove": true,
            "DicomModalities": known,
            "Plugins": if dicomweb { vec![DICOMWEB_PLUGIN] } else { Vec::new() },
            "DicomWeb": { "Enable": dicomweb, "Root": "/dicom-web/" },
        });
        let path = folder.join("orthanc.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(folder.join("orthanc.log")).unwrap();
        let child = Command::new(ORTHANC)
            .arg(&path)
            .env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("Orthanc (apt package orthanc) must be installed: make deps-apt");
        let dicom: SocketAddr = ([127, 0, 0, 1], dicom_port).into();
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let mut orthanc = Orthanc {
            child,
            dicom,
            http,
            ae_title: "ORTHANC",
            folder: folder.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(dicom).is_err() {
            if let Ok(Some(status)) = orthanc.child.try_wait() {
                panic!("Orthanc exited ({status}): {}", orthanc.log());
            }
            assert!(
                Instant::now() < deadline,
                "Orthanc did not listen: {}",
                orthanc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        orthanc
    }

    /// The base URL of its DICOMweb plugin (started with `dicomweb`).
    pub fn dicomweb_url(&self) -> String {
        format!("http://{}/dicom-web", self.http)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.join("orthanc.log")).unwrap_or_default()
    }

    /// Sends Part-10 files to it with dcmtk's storescu, as a modality would.
    pub fn store_files(&self, files: &[PathBuf]) {
        let output = Command::new("storescu")
            .env("TCP_NODELAY", "1")
            .args(["-aet", "MODALITY", "-aec", self.ae_title])
            .arg(self.dicom.ip().to_string())
            .arg(self.dicom.port().to_string())
            .args(files)
            .output()
            .expect("storescu (apt package dcmtk) must be installed");
        assert!(
            output.status.success(),
            "storescu into Orthanc failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Orthanc {
    /// One HTTP/1.0 request to its REST API; the status code and the body.
    pub fn rest(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(self.http).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.http,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    }

    /// Deletes the instance with this SOP Instance UID from the archive.
    pub fn delete_instance(&self, sop_instance_uid: &str) {
        let (status, found) = self.rest("POST", "/tools/lookup", sop_instance_uid);
        assert_eq!(status, 200, "{found}");
        let found: serde_json::Value = serde_json::from_str(&found).unwrap();
        let id = found[0]["ID"]
            .as_str()
            .expect("the archive holds the instance");
        let (status, answer) = self.rest("DELETE", &format!("/instances/{id}"), "");
        assert_eq!(status, 200, "{answer}");
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
