//! Domain errors as gRPC statuses. Messages carry what went wrong and how to fix it, never
//! patient data.

use tonic::Status;

use crate::encoder::BatchError;
use crate::slice::SliceError;

/// INVALID_ARGUMENT naming the request field the slice error points at.
pub fn slice(error: SliceError) -> Status {
    super::input::invalid(error.field(), &error)
}

/// RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when stopping or when a remote encoder
/// cannot be reached, INTERNAL when the model failed.
pub fn batch(error: &BatchError) -> Status {
    match error {
        BatchError::QueueFull { .. } => Status::resource_exhausted(error.to_string()),
        BatchError::Stopped | BatchError::Unavailable { .. } => {
            Status::unavailable(error.to_string())
        }
        BatchError::Failed { .. } => Status::internal(error.to_string()),
    }
}

/// UNAVAILABLE before the model is warm.
pub fn warming_up() -> Status {
    Status::unavailable(
        "the model is still loading and warming up; retry when gRPC health reports SERVING",
    )
}

/// UNIMPLEMENTED naming the issue that brings the call.
pub fn not_yet(call: &str, issue: &str, what: &str) -> Status {
    Status::unimplemented(format!(
        "{call} is not implemented yet: it arrives with issue {issue} ({what})"
    ))
}
