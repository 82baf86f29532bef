//! A remote encoder: the encoder graph run by a cluster's `encoder` role
//! (`diptych.internal.v1.EncoderService`, docs/CLUSTER.md) instead of a local ONNX Runtime
//! session. It is a [`BatchRunner`] like a session, so the batcher forms the same batches and a
//! router or shard configured with `[encoder] remote_url` sends each batch in one call.
//!
//! Every answer is checked as a local session's output is: the model id is the caller's (codes
//! of two models are never mixed), one code per slice, indices inside the codebook, scores in
//! [0, 1]. A failed or refused call fails the batch; the index retries it like any other
//! encoder failure, so an encoder that is down delays indexing and loses nothing.

use std::time::Duration;

use diptych::api::internal::v1::encoder_service_client::EncoderServiceClient;
use diptych::api::internal::v1::{EncodeBatchRequest, EncodedSlice};
use tonic::transport::{Channel, Endpoint};

use super::batcher::BatchRunner;
use super::model::{Geometry, RunError, SliceCode};

/// Where the remote encoder is and how long a batch may take.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOptions {
    /// `http://host:port` (or `https://`) of the encoder role's gRPC port.
    pub url: String,
    /// The longest a batch may take, queue time at the encoder included.
    pub timeout: Duration,
    /// The largest gRPC message sent or received.
    pub max_message_bytes: usize,
}

/// The encoder graph of a remote encoder, as one batch runner.
pub struct RemoteEncoder {
    options: RemoteOptions,
    model_id: String,
    geometry: Geometry,
    client: EncoderServiceClient<Channel>,
    runtime: tokio::runtime::Handle,
}

impl RemoteEncoder {
    /// A runner that asks `options.url` to encode with model `model_id` of `geometry`; the
    /// connection opens on the first batch (and again after the encoder restarts). Must be
    /// called inside a tokio runtime, whose handle the runner's blocking calls use.
    pub fn new(
        options: RemoteOptions,
        model_id: &str,
        geometry: Geometry,
    ) -> Result<RemoteEncoder, RunError> {
        let endpoint = Endpoint::from_shared(options.url.clone())
            .map_err(|e| RunError::Remote {
                url: options.url.clone(),
                message: format!("not a URL ({e}); give http://host:port"),
            })?
            .connect_timeout(options.timeout)
            .timeout(options.timeout);
        let client = EncoderServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(options.max_message_bytes)
            .max_encoding_message_size(options.max_message_bytes);
        Ok(RemoteEncoder {
            model_id: model_id.to_string(),
            geometry,
            client,
            runtime: tokio::runtime::Handle::current(),
            options,
        })
    }

    fn fail(&self, message: String) -> RunError {
        RunError::Remote {
            url: self.options.url.clone(),
            message,
        }
    }

    /// One slice of the answer, checked against the geometry.
    fn slice_code(&self, slice: EncodedSlice) -> Result<SliceCode, RunError> {
        let g = self.geometry;
        let p = g.positions();
        let lengths = [
            slice.normal.len(),
            slice.abnormal.len(),
            slice.abnormal_distance.len(),
        ];
        if lengths.iter().any(|&n| n != p) {
            return Err(self.fail(format!(
                "a slice's code has {lengths:?} values, not {p} each; the encoder runs another \
                 release or model"
            )));
        }
        let k = g.codebook_size as u32;
        if let Some(bad) = slice
            .normal
            .iter()
            .chain(&slice.abnormal)
            .find(|&&i| i >= k)
        {
            return Err(self.fail(format!("code index {bad} outside the codebook of {k}")));
        }
        if !(0.0..=1.0).contains(&slice.abnormality) {
            return Err(self.fail(format!("abnormality {} outside [0, 1]", slice.abnormality)));
        }
        Ok(SliceCode {
            normal: slice.normal,
            abnormal: slice.abnormal,
            abnormal_distance: slice.abnormal_distance,
            abnormality: slice.abnormality,
        })
    }
}

impl BatchRunner for RemoteEncoder {
    type Item = Vec<f32>;
    type Output = SliceCode;
    type Error = RunError;

    fn unavailable(error: &RunError) -> bool {
        matches!(error, RunError::RemoteUnavailable { .. })
    }

    fn run(&mut self, items: &[Vec<f32>]) -> Result<Vec<SliceCode>, RunError> {
        let pixels = self.geometry.pixels();
        let mut bytes = Vec::with_capacity(items.len() * pixels * 4);
        for item in items {
            if item.len() != pixels {
                return Err(RunError::Input {
                    what: "a slice",
                    got: item.len(),
                    expected: pixels,
                });
            }
            bytes.extend(item.iter().flat_map(|v| v.to_le_bytes()));
        }
        let request = EncodeBatchRequest {
            model_id: self.model_id.clone(),
            slices: items.len() as u32,
            pixels: bytes,
        };
        let mut client = self.client.clone();
        // A batcher worker is a plain thread: it may block on the runtime for the call.
        let answer = self
            .runtime
            .block_on(async move { client.encode_batch(request).await })
            .map_err(|status| {
                let message = format!(
                    "{:?}: {}; check that the encoder role runs and serves model {}",
                    status.code(),
                    status.message(),
                    self.model_id
                );
                match status.code() {
                    // Down, restarting, too busy or too slow: the same batch may pass later.
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted => RunError::RemoteUnavailable {
                        url: self.options.url.clone(),
                        message,
                    },
                    _ => self.fail(message),
                }
            })?
            .into_inner();
        if answer.model_id != self.model_id {
            return Err(self.fail(format!(
                "it encoded with model {:?}, not {:?}; codes of two models are never mixed",
                answer.model_id, self.model_id
            )));
        }
        if answer.slices.len() != items.len() {
            return Err(self.fail(format!(
                "{} codes for {} slices",
                answer.slices.len(),
                items.len()
            )));
        }
        answer
            .slices
            .into_iter()
            .map(|slice| self.slice_code(slice))
            .collect()
    }
}
