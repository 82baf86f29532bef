//! `diptych admin reindex`: re-index the server's records with a new model bundle (the current
//! model serves until every record has new codes), follow it with a progress bar, show where it
//! is, or give it up — through the AdminService (role `admin`).

use std::time::Duration;

use diptych::api::v1::admin_service_client::AdminServiceClient;
use diptych::api::v1::{
    CancelReindexRequest, GetReindexStatusRequest, ReindexPhase, ReindexStatus, StartReindexRequest,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::Connection;

/// How often the progress bar asks the server.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// `diptych admin reindex …`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReindexArgs {
    #[command(subcommand)]
    command: Option<ReindexCommand>,
    /// The new bundle's folder on the server's disk (manifest.json, encoder.onnx,
    /// decoder.onnx): starts the re-index (or goes on with an interrupted one).
    #[arg(long, value_name = "DIR")]
    model: Option<String>,
    /// Start it and return, without following its progress.
    #[arg(long, requires = "model")]
    no_wait: bool,
}

#[derive(Debug, clap::Subcommand)]
enum ReindexCommand {
    /// Where the re-index under way (or the last one) is.
    Status,
    /// Give up the re-index under way or failed: its codes are removed, the current model
    /// serves on.
    Cancel,
    /// Follow the re-index under way with a progress bar until it ends.
    Wait,
}

/// Runs `diptych admin reindex …`.
pub async fn run(
    client: &mut AdminServiceClient<Connection>,
    args: ReindexArgs,
) -> anyhow::Result<()> {
    match (args.command, args.model) {
        (Some(ReindexCommand::Status), _) => {
            let status = get(client).await?;
            print_status(&status);
            Ok(())
        }
        (Some(ReindexCommand::Cancel), _) => {
            let status = client
                .cancel_reindex(CancelReindexRequest {})
                .await
                .map_err(refused("CancelReindex"))?
                .into_inner();
            println!(
                "re-index to {} cancelled; {} serves",
                status.to_model_id, status.serving_model_id
            );
            Ok(())
        }
        (Some(ReindexCommand::Wait), _) => follow(client).await,
        (None, Some(model)) => {
            let status = client
                .start_reindex(StartReindexRequest { model_dir: model })
                .await
                .map_err(refused("StartReindex"))?
                .into_inner();
            if status.resumed_at > 0 {
                println!(
                    "re-index to {} goes on from record {} of {}",
                    status.to_model_id, status.resumed_at, status.records_total
                );
            } else {
                println!(
                    "re-index from {} to {} started; {} serves until it is done",
                    status.from_model_id, status.to_model_id, status.from_model_id
                );
            }
            if args.no_wait {
                println!("follow it with `diptych admin reindex wait` or `… reindex status`");
                return Ok(());
            }
            follow(client).await
        }
        (None, None) => anyhow::bail!(
            "say what to do: `diptych admin reindex --model DIR` to start, or `status`, `wait`, \
             `cancel`"
        ),
    }
}

/// A refused call explained, by its method name.
fn refused(call: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |status| super::refused(&format!("/diptych.v1.AdminService/{call}"), status)
}

async fn get(client: &mut AdminServiceClient<Connection>) -> anyhow::Result<ReindexStatus> {
    Ok(client
        .get_reindex_status(GetReindexStatusRequest {})
        .await
        .map_err(refused("GetReindexStatus"))?
        .into_inner())
}

fn phase(status: &ReindexStatus) -> ReindexPhase {
    ReindexPhase::try_from(status.phase).unwrap_or(ReindexPhase::Unspecified)
}

/// Polls the status under a progress bar until the re-index is done, failed or cancelled; an
/// error unless it is done.
async fn follow(client: &mut AdminServiceClient<Connection>) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} re-index {msg} [{bar:40}] {pos}/{len} records {per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let status = loop {
        let status = get(client).await?;
        bar.set_length(status.records_total.max(status.records_done));
        bar.set_position(status.records_done);
        bar.set_message(format!(
            "to {} ({})",
            status.to_model_id,
            phase_name(&status)
        ));
        match phase(&status) {
            ReindexPhase::Loading | ReindexPhase::Encoding | ReindexPhase::Switching => {}
            _ => break status,
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish_and_clear();
    print_status(&status);
    match phase(&status) {
        ReindexPhase::Done => Ok(()),
        ReindexPhase::Failed => anyhow::bail!(
            "the re-index failed: {}; start it again with the same --model to go on from its \
             last sync, or `diptych admin reindex cancel`",
            status.error
        ),
        ReindexPhase::Cancelled => anyhow::bail!("the re-index was cancelled"),
        _ => anyhow::bail!(
            "no re-index is under way; start one with `diptych admin reindex --model DIR`"
        ),
    }
}

fn phase_name(status: &ReindexStatus) -> &'static str {
    match phase(status) {
        ReindexPhase::Unspecified => "none since the server started",
        ReindexPhase::Loading => "loading",
        ReindexPhase::Encoding => "encoding",
        ReindexPhase::Switching => "switching",
        ReindexPhase::Done => "done",
        ReindexPhase::Failed => "failed",
        ReindexPhase::Cancelled => "cancelled",
    }
}

fn print_status(status: &ReindexStatus) {
    println!("phase            {}", phase_name(status));
    println!("serving          {}", status.serving_model_id);
    if phase(status) == ReindexPhase::Unspecified {
        return;
    }
    println!("from             {}", status.from_model_id);
    println!(
        "to               {} ({})",
        status.to_model_id, status.model_dir
    );
    println!(
        "records          {} of {}",
        status.records_done, status.records_total
    );
    if status.resumed_at > 0 {
        println!("resumed at       {}", status.resumed_at);
    }
    println!("from kept frames {}", status.from_kept_frames);
    println!("from the archive {}", status.from_archive);
    println!(
        "rate             {:.0} records/s over {:.1} s",
        status.records_per_second, status.elapsed_s
    );
    if !status.error.is_empty() {
        println!("error            {}", status.error);
    }
}
