//! [`DicomNetwork`]: the live lists of allowed DICOM peers and KOS destinations. The listener
//! and the KOS sender hold handles to the same lists, so a change applies to the next
//! association and the next KOS without a restart; each change is saved to the state file
//! before it applies, so it survives one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use diptych_dicom_adapter::scp::AllowList;

use super::entries::{KosDestination, Peer};
use super::state_file::{self, NetworkState, StateFileError};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The entry is already on the list.
    #[error("{0} is already on the list")]
    AlreadyExists(String),
    /// The entry is not on the list.
    #[error("{0} is not on the list; list the entries to see their exact form")]
    NotFound(String),
    /// The change would leave the allow-list empty, which allows any caller.
    #[error(
        "{0} is the last allowed peer and an empty list allows every caller; add the peer that replaces it first"
    )]
    LastPeer(String),
    /// The state file could not be written; nothing changed.
    #[error("the change was not saved, so it was not applied: {0}")]
    Save(#[from] StateFileError),
}

/// The shared list of KOS destinations the sender reads for each document.
#[derive(Debug, Clone, Default)]
pub struct KosDestinations(Arc<RwLock<Vec<KosDestination>>>);

impl KosDestinations {
    /// A list holding `destinations`.
    pub fn new(destinations: Vec<KosDestination>) -> Self {
        KosDestinations(Arc::new(RwLock::new(destinations)))
    }

    /// The destinations as they are now.
    pub fn snapshot(&self) -> Vec<KosDestination> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, destinations: Vec<KosDestination>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = destinations;
    }
}

/// Where the lists came from at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The state file existed and was read; the configuration's lists were not used.
    StateFile,
    /// There was no state file: the configuration's lists seeded a new one.
    Seeded,
}

/// The allowed peers and KOS destinations, persisted in the data folder.
#[derive(Debug)]
pub struct DicomNetwork {
    path: PathBuf,
    state: Mutex<NetworkState>,
    allow_list: AllowList,
    kos: KosDestinations,
}

impl DicomNetwork {
    /// Reads `<data_dir>/admin/dicom-peers.json`; without one, writes it from the
    /// configuration's `peers` and `kos` (the seed), which are ignored from then on.
    pub fn open(
        data_dir: &Path,
        peers: Vec<Peer>,
        kos: Vec<KosDestination>,
    ) -> Result<(DicomNetwork, Origin), StateFileError> {
        let path = state_file::path(data_dir);
        let (state, origin) = match state_file::load(&path)? {
            Some(state) => (state, Origin::StateFile),
            None => {
                let state = NetworkState {
                    version: 1,
                    peers,
                    kos_destinations: kos,
                };
                state_file::save(&path, &state)?;
                (state, Origin::Seeded)
            }
        };
        let network = DicomNetwork {
            allow_list: AllowList::new(state.peers.iter().map(Peer::allowed_caller).collect()),
            kos: KosDestinations::default(),
            path,
            state: Mutex::new(NetworkState::default()),
        };
        network.kos.replace(state.kos_destinations.clone());
        *network.lock() = state;
        Ok((network, origin))
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listener's handle to the allow-list.
    pub fn allow_list(&self) -> AllowList {
        self.allow_list.clone()
    }

    /// The KOS sender's handle to the destinations.
    pub fn kos_destinations(&self) -> KosDestinations {
        self.kos.clone()
    }

    /// The allowed peers.
    pub fn peers(&self) -> Vec<Peer> {
        self.lock().peers.clone()
    }

    /// Adds an allowed peer.
    pub fn add_peer(&self, peer: Peer) -> Result<(), ChangeError> {
        self.change(|state| {
            if state.peers.contains(&peer) {
                return Err(ChangeError::AlreadyExists(format!("peer {peer}")));
            }
            state.peers.push(peer);
            Ok(())
        })
    }

    /// Removes an allowed peer (the same AE title and host as listed).
    pub fn remove_peer(&self, peer: &Peer) -> Result<(), ChangeError> {
        self.change(|state| {
            let at = state
                .peers
                .iter()
                .position(|p| p == peer)
                .ok_or_else(|| ChangeError::NotFound(format!("peer {peer}")))?;
            if state.peers.len() == 1 {
                return Err(ChangeError::LastPeer(format!("peer {peer}")));
            }
            state.peers.remove(at);
            Ok(())
        })
    }

    /// Adds a KOS destination.
    pub fn add_kos(&self, destination: KosDestination) -> Result<(), ChangeError> {
        self.change(|state| {
            if state.kos_destinations.contains(&destination) {
                return Err(ChangeError::AlreadyExists(format!(
                    "KOS destination {destination}"
                )));
            }
            state.kos_destinations.push(destination);
            Ok(())
        })
    }

    /// Removes a KOS destination (the same AE title, host and port as listed).
    pub fn remove_kos(&self, destination: &KosDestination) -> Result<(), ChangeError> {
        self.change(|state| {
            let before = state.kos_destinations.len();
            state.kos_destinations.retain(|d| d != destination);
            if state.kos_destinations.len() == before {
                return Err(ChangeError::NotFound(format!(
                    "KOS destination {destination}"
                )));
            }
            Ok(())
        })
    }

    /// Applies `edit` to a copy, saves the copy, then makes it live.
    fn change(
        &self,
        edit: impl FnOnce(&mut NetworkState) -> Result<(), ChangeError>,
    ) -> Result<(), ChangeError> {
        let mut state = self.lock();
        let mut next = state.clone();
        edit(&mut next)?;
        state_file::save(&self.path, &next)?;
        self.allow_list
            .replace(next.peers.iter().map(Peer::allowed_caller).collect());
        self.kos.replace(next.kos_destinations.clone());
        *state = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetworkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_used_once_and_changes_persist_and_apply() {
        let dir = tempfile::tempdir().unwrap();
        let ct = Peer::new("CT1", "").unwrap();
        let (network, origin) = DicomNetwork::open(dir.path(), vec![ct.clone()], vec![]).unwrap();
        assert_eq!(origin, Origin::Seeded);
        let listener = network.allow_list();
        let local = "127.0.0.1".parse().unwrap();
        assert!(!listener.allows("MR2", local));
        network
            .add_peer(Peer::new("MR2", "127.0.0.1").unwrap())
            .unwrap();
        assert!(listener.allows("MR2", local));
        assert!(matches!(
            network.add_peer(Peer::new("MR2", "127.0.0.1").unwrap()),
            Err(ChangeError::AlreadyExists(_))
        ));
        assert!(matches!(
            network.remove_peer(&Peer::new("MR2", "").unwrap()),
            Err(ChangeError::NotFound(_))
        ));
        network.remove_peer(&ct).unwrap();
        assert!(matches!(
            network.remove_peer(&Peer::new("MR2", "127.0.0.1").unwrap()),
            Err(ChangeError::LastPeer(_))
        ));
        let kos = KosDestination::parse("V@127.0.0.1:104").unwrap();
        network.add_kos(kos.clone()).unwrap();
        assert_eq!(
            network.kos_destinations().snapshot(),
            std::slice::from_ref(&kos)
        );
        drop(network);

        // A second start reads the file; a different seed is ignored.
        let (again, origin) =
            DicomNetwork::open(dir.path(), vec![Peer::new("OTHER", "").unwrap()], vec![]).unwrap();
        assert_eq!(origin, Origin::StateFile);
        assert_eq!(again.peers(), [Peer::new("MR2", "127.0.0.1").unwrap()]);
        assert_eq!(again.kos_destinations().snapshot(), [kos]);
    }
}
