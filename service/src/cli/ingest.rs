//! `diptych ingest PATH…`: sends files and folders of DICOM to the server's Ingest stream.

use std::path::{Path, PathBuf};

use anyhow::Context;
use diptych::api::v1::IngestRequest;
use diptych::api::v1::ingest_service_client::IngestServiceClient;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{MAX_MESSAGE_BYTES, ServerArgs, connect, refused};

/// Every file under `paths` (folders walked recursively, in name order).
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(files)
}

fn walk(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            walk(&entry, files)?;
        }
    } else {
        // Fails with "No such file" for a missing path, which is what the user needs to hear.
        std::fs::metadata(path)?;
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// Streams the files to the server and prints what happened to each.
pub async fn run(server: &ServerArgs, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = collect_files(paths)?;
    if files.is_empty() {
        anyhow::bail!("no files under the given paths");
    }
    let channel = connect(server).await?;
    let mut client = IngestServiceClient::new(channel)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} ingest [{bar:40}] {pos}/{len} files {per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let (tx, rx) = mpsc::channel(32);
    let sender_bar = bar.clone();
    let reader = tokio::spawn(async move {
        let mut unreadable = Vec::new();
        for path in files {
            match tokio::fs::read(&path).await {
                Ok(dicom) => {
                    let request = IngestRequest {
                        dicom,
                        client_ref: path.display().to_string(),
                    };
                    if tx.send(request).await.is_err() {
                        break;
                    }
                }
                Err(e) => unreadable.push(format!("{}: {e}", path.display())),
            }
            sender_bar.inc(1);
        }
        unreadable
    });
    let answer = client
        .ingest(ReceiverStream::new(rx))
        .await
        .map_err(|s| refused("/diptych.v1.IngestService/Ingest", s))?
        .into_inner();
    let unreadable = reader.await.context("the file reader failed")?;
    bar.finish_and_clear();
    println!(
        "indexed {} instances ({} slices); {} duplicates kept once; {} non-image objects counted; \
         {} refused; {} unreadable",
        answer.accepted,
        answer.slices,
        answer.duplicates,
        answer.non_image,
        answer.failures.len(),
        unreadable.len()
    );
    for failure in &answer.failures {
        println!("  refused {}: {}", failure.client_ref, failure.reason);
    }
    for line in &unreadable {
        println!("  unreadable {line}");
    }
    Ok(())
}
