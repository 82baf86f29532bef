//! The audit trail's view of a gRPC call: who called, from where, with which request id —
//! taken from the request before the handler consumes it, and turned into an event with the
//! call's outcome once it is answered.

use tonic::{Request, Status};

use crate::audit::{AuditEvent, Outcome, What, Who};
use crate::auth::Caller;

/// Who made a call, from where, and its request id.
#[derive(Debug, Clone)]
pub struct CallRecord {
    who: Who,
    peer: Option<String>,
    request_id: Option<String>,
}

impl CallRecord {
    /// The caller the gate admitted, the peer address and the request id of `request`.
    pub fn of<T>(request: &Request<T>) -> Self {
        Self {
            who: Who::caller(request.extensions().get::<Caller>()),
            peer: request.remote_addr().map(|a| a.to_string()),
            request_id: super::observe::request_id_of(request),
        }
    }

    /// The event of the call that did `what` and was answered with `result`: a success, or a
    /// failure whose reason is the status message.
    pub fn event<T>(self, what: What, result: &Result<T, Status>) -> AuditEvent {
        let outcome = if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let event =
            AuditEvent::now(outcome, self.who, self.peer, what).with_request_id(self.request_id);
        match result {
            Ok(_) => event,
            Err(status) => event.with_reason(status.message()),
        }
    }
}
