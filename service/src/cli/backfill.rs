//! `diptych backfill`: index what an archive already holds — a DICOM node (C-FIND, then C-GET or
//! C-MOVE) or a DICOMweb archive (QIDO-RS, then WADO-RS) — through the AdminService's Backfill
//! call of a running server (role `admin`), with a progress bar and a summary of what failed
//! and why. The job runs in the server: interrupting this command does not stop it, and running
//! it again with the same arguments follows it, or resumes it after a restart.

use diptych::api::v1::admin_service_client::AdminServiceClient;
use diptych::api::v1::{BackfillMethod, BackfillProgress, BackfillRequest};
use indicatif::{ProgressBar, ProgressStyle};

use super::{ServerArgs, connect, refused};

/// How instances are pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// C-GET on the association that asked.
    Get,
    /// C-MOVE to the server's own AE title (the archive must know where it listens).
    Move,
    /// WADO-RS from a DICOMweb archive (--archive-url), after a QIDO-RS search.
    WadoRs,
}

/// `diptych backfill …`
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The archive's DICOM node, AE@HOST:PORT (e.g. PACS@10.0.0.7:104), for get and move;
    /// without it, `dicom` of the server's [archive] section.
    #[arg(long, default_value = "")]
    archive: String,
    /// The archive's DICOMweb base URL (e.g. http://pacs:8042/dicom-web): the studies are found
    /// by QIDO-RS and pulled by WADO-RS; implies --method wado-rs.
    #[arg(
        long,
        value_name = "URL",
        default_value = "",
        conflicts_with = "archive"
    )]
    archive_url: String,
    /// First study date, YYYYMMDD.
    #[arg(long, value_name = "YYYYMMDD", default_value = "")]
    from: String,
    /// Last study date, YYYYMMDD.
    #[arg(long, value_name = "YYYYMMDD", default_value = "")]
    to: String,
    /// Only studies holding this modality, e.g. MR.
    #[arg(long, default_value = "")]
    modality: String,
    /// Study Description, with wildcards * and ?.
    #[arg(long, default_value = "")]
    description: String,
    /// How instances are pulled [default: wado-rs with --archive-url, else get]; wado-rs
    /// without --archive-url pulls from `url` of the server's [archive] section.
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// Studies fetched at once (1 to 16).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Most studies started per minute (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    per_minute: f64,
    /// Only start studies in this daily window, HH:MM-HH:MM in UTC (e.g. 19:00-07:00).
    #[arg(long, default_value = "")]
    off_hours: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs (or follows) the job and prints its summary; an error when it stopped or a study
/// failed.
pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let method = match args.method {
        Some(method) => method,
        None if !args.archive_url.is_empty() => MethodArg::WadoRs,
        None => MethodArg::Get,
    };
    if !args.archive_url.is_empty() && method != MethodArg::WadoRs {
        anyhow::bail!(
            "--archive-url is a DICOMweb archive, pulled with --method wado-rs; for get or move give the DICOM node with --archive AE@HOST:PORT"
        );
    }
    let mut client = AdminServiceClient::new(connect(&args.server).await?);
    let request = BackfillRequest {
        archive: args.archive,
        archive_url: args.archive_url,
        date_from: args.from,
        date_to: args.to,
        modality: args.modality,
        description: args.description,
        method: match method {
            MethodArg::Get => BackfillMethod::CGet,
            MethodArg::Move => BackfillMethod::CMove,
            MethodArg::WadoRs => BackfillMethod::WadoRs,
        } as i32,
        concurrency: args.concurrency,
        studies_per_minute: args.per_minute,
        off_hours: args.off_hours,
    };
    let mut stream = client
        .backfill(request)
        .await
        .map_err(|s| refused("/diptych.v1.AdminService/Backfill", s))?
        .into_inner();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} backfill {msg} [{bar:40}] {pos}/{len} studies eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let mut last: Option<BackfillProgress> = None;
    while let Some(progress) = stream
        .message()
        .await
        .map_err(|s| refused("/diptych.v1.AdminService/Backfill", s))?
    {
        bar.set_length(u64::from(progress.studies_total));
        bar.set_position(u64::from(
            progress.studies_indexed + progress.studies_skipped + progress.studies_failed,
        ));
        bar.set_message(format!(
            "{} ({} instances, {} failed)",
            progress.state, progress.instances_stored, progress.studies_failed
        ));
        last = Some(progress);
    }
    bar.finish_and_clear();
    let Some(last) = last else {
        anyhow::bail!("the server ended the backfill without a word; check its log");
    };
    println!(
        "backfill {}: {} studies matched, {} indexed ({} instances), {} already indexed, {} failed{} in {:.1} s",
        last.state,
        last.studies_total,
        last.studies_indexed,
        last.instances_stored,
        last.studies_skipped,
        last.studies_failed,
        if last.resumed_studies > 0 {
            format!(" ({} finished before this run)", last.resumed_studies)
        } else {
            String::new()
        },
        last.elapsed_s
    );
    for failure in &last.failures {
        println!(
            "  failed {}: {}",
            failure.study_instance_uid, failure.reason
        );
    }
    match last.state.as_str() {
        "done" if last.studies_failed == 0 => Ok(()),
        "done" => anyhow::bail!(
            "{} studies could not be pulled (above); run the same command again to retry them",
            last.studies_failed
        ),
        _ => anyhow::bail!("the backfill stopped: {}", last.message),
    }
}
