//! `diptych admin`: the allowed DICOM peers, the KOS destinations, a C-ECHO to a destination,
//! the recent associations and re-indexing ([`super::reindex`]), through the AdminService of a
//! running server (role `admin`).

use super::{Connection, ServerArgs, connect};
use anyhow::Context;
use diptych::api::v1::admin_service_client::AdminServiceClient;
use diptych::api::v1::{
    AddKosDestinationRequest, AddPeerRequest, EchoDestinationRequest, KosDestination,
    ListAssociationsRequest, ListKosDestinationsRequest, ListPeersRequest, Peer,
    RemoveKosDestinationRequest, RemovePeerRequest,
};

/// `diptych admin …`
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// The calling AE titles allowed to send DICOM (changes apply to the next association).
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Where a KOS document goes for each received study.
    #[command(subcommand)]
    Kos(KosCommand),
    /// Re-index every record with a new model bundle (`--model DIR`), or its `status`, `wait`,
    /// `cancel`.
    Reindex(super::reindex::ReindexArgs),
    /// Recent DICOM associations from the audit trail, newest first.
    Associations {
        /// Entries per page (default 50, at most 1000).
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        /// The token printed under the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum PeersCommand {
    /// List the allowed peers.
    List,
    /// Allow a calling AE title, from anywhere or (--host) from one IP address.
    Add {
        /// The calling AE title.
        ae_title: String,
        /// Only from this IP address.
        #[arg(long, default_value = "")]
        host: String,
    },
    /// Remove an allowed peer, with the host it is listed with.
    Remove {
        /// The calling AE title.
        ae_title: String,
        /// The host it is listed with.
        #[arg(long, default_value = "")]
        host: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum KosCommand {
    /// List the KOS destinations.
    List,
    /// Add a KOS destination, `AE@HOST:PORT`.
    Add {
        /// `AE@HOST:PORT`, e.g. WEASIS@10.0.0.9:11113.
        destination: String,
    },
    /// Remove a KOS destination, `AE@HOST:PORT` as listed.
    Remove {
        /// `AE@HOST:PORT`.
        destination: String,
    },
    /// C-ECHO a listed destination by its AE title, or any `AE@HOST:PORT`.
    Echo {
        /// An AE title from the list, or `AE@HOST:PORT`.
        destination: String,
    },
}

/// Runs `diptych admin …`.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(connect(&args.server).await?);
    match args.command {
        AdminCommand::Peers(command) => peers(&mut client, command).await,
        AdminCommand::Kos(command) => kos(&mut client, command).await,
        AdminCommand::Reindex(args) => super::reindex::run(&mut client, args).await,
        AdminCommand::Associations {
            page_size,
            page_token,
        } => associations(&mut client, page_size, page_token).await,
    }
}

/// A refused call explained (what to pass, which role it needs), by its method name.
fn refused(call: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |status| super::refused(&format!("/diptych.v1.AdminService/{call}"), status)
}

fn peer_text(peer: &Peer) -> String {
    match peer.host.as_str() {
        "" => peer.ae_title.clone(),
        host => format!("{}@{host}", peer.ae_title),
    }
}

async fn peers(
    client: &mut AdminServiceClient<Connection>,
    command: PeersCommand,
) -> anyhow::Result<()> {
    match command {
        PeersCommand::List => {
            let peers = client
                .list_peers(ListPeersRequest {})
                .await
                .map_err(refused("ListPeers"))?
                .into_inner()
                .peers;
            if peers.is_empty() {
                println!("no peers listed: any calling AE title may associate");
            }
            for peer in &peers {
                println!("{}", peer_text(peer));
            }
        }
        PeersCommand::Add { ae_title, host } => {
            let peer = client
                .add_peer(AddPeerRequest {
                    peer: Some(Peer { ae_title, host }),
                })
                .await
                .map_err(refused("AddPeer"))?
                .into_inner();
            println!("allowed {}", peer_text(&peer));
        }
        PeersCommand::Remove { ae_title, host } => {
            let peer = Peer { ae_title, host };
            client
                .remove_peer(RemovePeerRequest {
                    peer: Some(peer.clone()),
                })
                .await
                .map_err(refused("RemovePeer"))?;
            println!("removed {}", peer_text(&peer));
        }
    }
    Ok(())
}

/// Splits `AE@HOST:PORT` (the server checks each part).
fn destination(text: &str) -> anyhow::Result<KosDestination> {
    let (ae_title, address) = text
        .split_once('@')
        .with_context(|| format!("{text:?} is not AE@HOST:PORT"))?;
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{text:?} is not AE@HOST:PORT: no port"))?;
    let port = port
        .parse()
        .with_context(|| format!("{text:?}: the port {port:?} is not a number"))?;
    Ok(KosDestination {
        ae_title: ae_title.to_string(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    })
}

fn destination_text(d: &KosDestination) -> String {
    if d.host.contains(':') {
        format!("{}@[{}]:{}", d.ae_title, d.host, d.port)
    } else {
        format!("{}@{}:{}", d.ae_title, d.host, d.port)
    }
}

async fn kos(
    client: &mut AdminServiceClient<Connection>,
    command: KosCommand,
) -> anyhow::Result<()> {
    match command {
        KosCommand::List => {
            let answer = client
                .list_kos_destinations(ListKosDestinationsRequest {})
                .await
                .map_err(refused("ListKosDestinations"))?
                .into_inner();
            if !answer.kos_enabled {
                println!("(this server sends no KOS documents: [dicom.kos] is not configured)");
            }
            for d in &answer.destinations {
                println!("{}", destination_text(d));
            }
        }
        KosCommand::Add { destination: text } => {
            let added = client
                .add_kos_destination(AddKosDestinationRequest {
                    destination: Some(destination(&text)?),
                })
                .await
                .map_err(refused("AddKosDestination"))?
                .into_inner();
            println!("added {}", destination_text(&added));
        }
        KosCommand::Remove { destination: text } => {
            client
                .remove_kos_destination(RemoveKosDestinationRequest {
                    destination: Some(destination(&text)?),
                })
                .await
                .map_err(refused("RemoveKosDestination"))?;
            println!("removed {text}");
        }
        KosCommand::Echo { destination: text } => {
            let target = if text.contains('@') {
                destination(&text)?
            } else {
                KosDestination {
                    ae_title: text,
                    ..KosDestination::default()
                }
            };
            let answer = client
                .echo_destination(EchoDestinationRequest {
                    destination: Some(target),
                })
                .await
                .map_err(refused("EchoDestination"))?
                .into_inner();
            if answer.success {
                println!(
                    "C-ECHO {}: success in {:.1} ms",
                    answer.destination, answer.round_trip_ms
                );
            } else {
                anyhow::bail!("C-ECHO {} failed: {}", answer.destination, answer.error);
            }
        }
    }
    Ok(())
}

async fn associations(
    client: &mut AdminServiceClient<Connection>,
    page_size: i32,
    page_token: String,
) -> anyhow::Result<()> {
    let page = client
        .list_associations(ListAssociationsRequest {
            page_size,
            page_token,
        })
        .await
        .map_err(refused("ListAssociations"))?
        .into_inner();
    println!(
        "{:<24}  {:<16}  {:<16}  {:<21}  {:>9}  {:<15}  reason",
        "time", "calling AE", "called AE", "peer", "instances", "end"
    );
    for a in &page.associations {
        println!(
            "{:<24}  {:<16}  {:<16}  {:<21}  {:>9}  {:<15}  {}",
            a.time, a.calling_ae, a.called_ae, a.peer, a.instances_received, a.end, a.reason
        );
    }
    if !page.next_page_token.is_empty() {
        println!("next page: --page-token {}", page.next_page_token);
    }
    Ok(())
}
