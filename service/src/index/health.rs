//! Whether the index takes new work. A failure that persists in the apply worker (a full disk,
//! an encoder that keeps failing, a catalog error) stops acknowledgements — C-STORE answers
//! 0xA700, Ingest UNAVAILABLE, gRPC health NOT_SERVING — until the worker's retries succeed,
//! which clears it by itself.

use tokio::sync::watch;

/// The index's fault, if any, observable by the server (for its health status).
#[derive(Debug)]
pub struct Health {
    fault: watch::Sender<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            fault: watch::Sender::new(None),
        }
    }
}

impl Health {
    /// The reason acknowledgements are stopped, or `None` while the index takes work.
    pub fn fault(&self) -> Option<String> {
        self.fault.borrow().clone()
    }

    /// Follows the fault as it is set and cleared.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.fault.subscribe()
    }

    /// Stops acknowledgements with `reason` (which never holds patient data).
    pub(crate) fn set_fault(&self, reason: &str) {
        self.fault.send_if_modified(|fault| {
            if fault.as_deref() == Some(reason) {
                return false;
            }
            if fault.is_none() {
                tracing::error!(
                    %reason,
                    "indexing keeps failing: new instances are refused (0xA700, UNAVAILABLE) until it recovers"
                );
            }
            *fault = Some(reason.to_string());
            true
        });
    }

    /// Takes work again: the cause of the fault is gone.
    pub(crate) fn clear(&self) {
        self.fault.send_if_modified(|fault| {
            if fault.take().is_some() {
                tracing::info!("indexing recovered: new instances are acknowledged again");
                true
            } else {
                false
            }
        });
    }
}
