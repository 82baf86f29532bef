//! [`AllowList`]: the calling AE titles allowed to associate, shared between the listener and
//! whoever changes it while the listener runs (an administration API): every new association
//! is checked against the list as it is at that moment.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use super::config::AllowedCaller;

/// A shared, changeable allow-list; clones see the same list. Empty allows any caller.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    callers: Arc<RwLock<Vec<AllowedCaller>>>,
}

impl AllowList {
    /// A list holding `callers`.
    pub fn new(callers: Vec<AllowedCaller>) -> Self {
        AllowList {
            callers: Arc::new(RwLock::new(callers)),
        }
    }

    /// Replaces the entries; associations requested from now on are checked against `callers`.
    pub fn replace(&self, callers: Vec<AllowedCaller>) {
        *self.callers.write().unwrap_or_else(PoisonError::into_inner) = callers;
    }

    /// The entries as they are now.
    pub fn snapshot(&self) -> Vec<AllowedCaller> {
        self.callers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `calling_ae` (trimmed) from `peer` may associate: the list is empty, or an entry
    /// names the title and either no host or `peer`'s address (IPv4-mapped IPv6 counts as IPv4).
    pub fn allows(&self, calling_ae: &str, peer: IpAddr) -> bool {
        let callers = self.callers.read().unwrap_or_else(PoisonError::into_inner);
        callers.is_empty()
            || callers.iter().any(|allowed| {
                allowed.ae_title.trim() == calling_ae
                    && allowed
                        .host
                        .is_none_or(|host| host.to_canonical() == peer.to_canonical())
            })
    }
}

impl From<Vec<AllowedCaller>> for AllowList {
    fn from(callers: Vec<AllowedCaller>) -> Self {
        AllowList::new(callers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_by_every_clone() {
        let list = AllowList::default();
        let listener_side = list.clone();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(listener_side.allows("ANYONE", local), "empty allows any");
        list.replace(vec![AllowedCaller {
            ae_title: "CT1".to_string(),
            host: Some(local),
        }]);
        assert!(listener_side.allows("CT1", "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!listener_side.allows("CT1", "10.0.0.1".parse().unwrap()));
        assert!(!listener_side.allows("ANYONE", local));
        assert_eq!(listener_side.snapshot().len(), 1);
    }
}
