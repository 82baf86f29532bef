//! `diptych config check FILE` and `diptych config reference` as a user runs them: a valid file
//! gives one line and status 0; an unknown key, a value out of range or a bad allow-list entry
//! gives a message naming the key (and the nearest real key) and status 1; the reference is the
//! committed docs/CONFIGURATION.md.

use std::process::Command;

fn diptych(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(args)
        .env_remove("DIPTYCH_CONFIG")
        .output()
        .expect("running diptych");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn check(text: &str) -> (bool, String, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    diptych(&["config", "check", file.path().to_str().unwrap()])
}

#[test]
fn a_valid_file_gives_one_line_and_status_0() {
    let (ok, stdout, stderr) = check(
        "data_dir = \"/srv/diptych\"\n[http]\naddr = \"127.0.0.1:9100\"\n[log]\nformat = \"json\"\n\
         [dicom]\nae_title = \"ARCHIVE\"\nallowed_callers = [\"CT1\", \"PACS@10.0.0.5\"]\n",
    );
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("valid")
            && stdout.contains("HTTP 127.0.0.1:9100")
            && stdout.contains("as ARCHIVE")
            && stdout.contains("json logs"),
        "{stdout}"
    );
}

#[test]
fn mistakes_give_status_1_and_name_the_key() {
    let cases = [
        (
            "[encoder]\nmax_bach = 4\n",
            &["encoder.max_bach", "did you mean `encoder.max_batch`"][..],
        ),
        (
            "[index]\nmax_backlog_frames = 0\n",
            &["index.max_backlog_frames", "1..=4294967295"][..],
        ),
        ("[log]\nformat = \"xml\"\n", &["format", "xml"][..]),
        (
            "[dicom]\nallowed_callers = [\"A@B@C\"]\n",
            &["dicom.allowed_callers", "AE@ip"][..],
        ),
    ];
    for (text, expected) in cases {
        let (ok, stdout, stderr) = check(text);
        assert!(!ok, "{text} was accepted: {stdout}");
        for part in expected {
            assert!(stderr.contains(part), "{text}: {stderr:?} lacks {part:?}");
        }
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }
    let (ok, _, stderr) = diptych(&["config", "check", "/nonexistent/diptych.toml"]);
    assert!(
        !ok && stderr.contains("/nonexistent/diptych.toml"),
        "{stderr}"
    );
}

#[test]
fn the_reference_is_the_committed_page() {
    let (ok, stdout, stderr) = diptych(&["config", "reference"]);
    assert!(ok, "{stderr}");
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIGURATION.md");
    assert_eq!(
        stdout,
        std::fs::read_to_string(&page).unwrap(),
        "regenerate {} with `diptych config reference`",
        page.display()
    );
    for key in [
        "http.addr",
        "DIPTYCH_HTTP_ADDR",
        "--http-addr",
        "log.format",
        "--log-format",
    ] {
        assert!(stdout.contains(key), "{key}");
    }
}
