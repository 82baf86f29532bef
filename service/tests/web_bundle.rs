//! The page's committed script is what its sources make: web/build.sh run on a copy of web/ and
//! proto/ regenerates the TypeScript client, type-checks and bundles, and both the generated
//! client (web/src/gen) and the bundle (service/src/web/assets/app.js) must equal the
//! committed ones byte for byte. When this fails, run `web/build.sh` and commit what changed.

#[path = "support/serve.rs"]
mod serve;

use std::path::Path;
use std::process::Command;

use serve::workspace;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "node_modules" {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_committed_bundle_and_client_are_built_from_their_sources() {
    let root = workspace();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root.join("web"), &dir.path().join("web"));
    copy_tree(&root.join("proto"), &dir.path().join("proto"));
    let bundle = dir.path().join("app.js");
    let output = Command::new("bash")
        .arg(dir.path().join("web/build.sh"))
        .arg(&bundle)
        .output()
        .expect("running web/build.sh");
    assert!(
        output.status.success(),
        "web/build.sh failed (npm packages come from `make deps-web`):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = std::fs::read(root.join("service/src/web/assets/app.js")).unwrap();
    assert!(
        std::fs::read(&bundle).unwrap() == committed,
        "service/src/web/assets/app.js is not what web/build.sh makes of web/src: run web/build.sh and commit it"
    );
    let (mut built, mut kept) = (Vec::new(), Vec::new());
    files(&dir.path().join("web/src/gen"), &mut built);
    files(&root.join("web/src/gen"), &mut kept);
    assert_eq!(
        built.len(),
        kept.len(),
        "web/src/gen holds other files than proto/ generates: run web/build.sh"
    );
    for file in built {
        let relative = file.strip_prefix(dir.path()).unwrap();
        assert!(
            std::fs::read(&file).unwrap() == std::fs::read(root.join(relative)).unwrap_or_default(),
            "{} is stale: run web/build.sh and commit it",
            relative.display()
        );
    }
}
