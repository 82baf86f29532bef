//! The wire: PDUs read and written on a byte stream (TCP or TLS) with bounds and timeouts.
//!
//! A PDU's 6-byte header is read first and its declared length checked against the bound for
//! its type *before* a byte of its body is buffered: a peer claiming 4 GiB costs nothing but an
//! A-ABORT. The body is then decoded by dicom-ul's PDU reader.

use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, MAXIMUM_PDU_SIZE, PDU_HEADER_SIZE, PDataValue,
    PDataValueType,
};
use dicom_ul::{Pdu, read_pdu, write_pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest A-ASSOCIATE-RQ accepted (128 presentation contexts with many syntaxes fit easily).
const MAX_ASSOCIATE_RQ: u32 = 1 << 20;
/// Largest PDU of any other non-data type (release, abort: a few bytes).
const MAX_CONTROL_PDU: u32 = 1 << 10;
/// PDU type of P-DATA-TF.
const P_DATA_TF: u8 = 0x04;
/// PDU type of A-ASSOCIATE-RQ.
const A_ASSOCIATE_RQ: u8 = 0x01;
/// PDV header: 4-byte item length, context id, message control header.
const PDV_HEADER: usize = 6;

/// Why the wire failed; ends the association.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The peer closed the connection.
    Closed,
    /// No data within the timeout.
    Timeout(Duration),
    /// A PDU declared more bytes than allowed for its type.
    TooLarge {
        /// PDU type byte.
        pdu_type: u8,
        /// Declared length.
        declared: u32,
        /// The bound.
        limit: u32,
    },
    /// The PDU body could not be decoded.
    Malformed(String),
    /// Socket error.
    Io(std::io::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed by the peer"),
            Self::Timeout(d) => write!(f, "nothing received for {} s", d.as_secs_f32()),
            Self::TooLarge {
                pdu_type,
                declared,
                limit,
            } => write!(
                f,
                "PDU of type {pdu_type:#04x} declares {declared} bytes, more than the {limit} allowed"
            ),
            Self::Malformed(message) => write!(f, "malformed PDU: {message}"),
            Self::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// A stream carrying PDUs.
pub(crate) struct Wire<S> {
    stream: S,
    /// Bound on P-DATA-TF lengths (the maximum length receivable we announce).
    max_pdu_length: u32,
    /// Timeout for the rest of a PDU once its first byte came, and for writes.
    read_timeout: Duration,
    /// Largest PDU the peer accepts (0: no limit); responses are split to fit it.
    pub peer_max_pdu: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps `stream`.
    pub(crate) fn new(stream: S, max_pdu_length: u32, read_timeout: Duration) -> Self {
        Self {
            stream,
            max_pdu_length,
            read_timeout,
            peer_max_pdu: 0,
        }
    }

    /// Reads one PDU, waiting at most `wait` for it to start.
    pub(crate) async fn receive(&mut self, wait: Duration) -> Result<Pdu, WireError> {
        let mut header = [0u8; PDU_HEADER_SIZE as usize];
        // The first byte may take `wait` (idle); the rest of the header the read timeout.
        match tokio::time::timeout(wait, self.stream.read(&mut header[..1])).await {
            Err(_) => return Err(WireError::Timeout(wait)),
            Ok(Ok(0)) => return Err(WireError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(WireError::Io(e)),
        }
        self.read_exact(&mut header[1..]).await?;
        let pdu_type = header[0];
        let declared = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let limit = match pdu_type {
            P_DATA_TF => self.max_pdu_length,
            A_ASSOCIATE_RQ => MAX_ASSOCIATE_RQ,
            _ => MAX_CONTROL_PDU,
        };
        if declared > limit {
            return Err(WireError::TooLarge {
                pdu_type,
                declared,
                limit,
            });
        }
        let mut bytes = vec![0u8; PDU_HEADER_SIZE as usize + declared as usize];
        bytes[..PDU_HEADER_SIZE as usize].copy_from_slice(&header);
        self.read_exact(&mut bytes[PDU_HEADER_SIZE as usize..])
            .await?;
        match read_pdu(&bytes[..], MAXIMUM_PDU_SIZE, false) {
            Ok(Some(pdu)) => Ok(pdu),
            Ok(None) => Err(WireError::Malformed("incomplete PDU".to_string())),
            Err(e) => Err(WireError::Malformed(e.to_string())),
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        match tokio::time::timeout(self.read_timeout, self.stream.read_exact(buf)).await {
            Err(_) => Err(WireError::Timeout(self.read_timeout)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Closed),
            Ok(Err(e)) => Err(WireError::Io(e)),
        }
    }

    /// Writes one PDU.
    pub(crate) async fn send(&mut self, pdu: &Pdu) -> Result<(), WireError> {
        let mut bytes = Vec::new();
        write_pdu(&mut bytes, pdu).map_err(|e| WireError::Malformed(e.to_string()))?;
        let write = async {
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.read_timeout, write).await {
            Err(_) => Err(WireError::Timeout(self.read_timeout)),
            Ok(result) => result.map_err(WireError::Io),
        }
    }

    /// Sends a command set on presentation context `context_id`, split into as many P-DATA-TF
    /// PDUs as the peer's maximum PDU length requires.
    pub(crate) async fn send_command(
        &mut self,
        context_id: u8,
        command: Vec<u8>,
    ) -> Result<(), WireError> {
        let room = match self.peer_max_pdu {
            0 => usize::MAX,
            max => (max as usize).saturating_sub(PDV_HEADER).max(1),
        };
        let mut chunks: Vec<&[u8]> = command.chunks(room).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context_id,
                    value_type: PDataValueType::Command,
                    is_last: i == last,
                    data: chunk.to_vec(),
                }],
            };
            self.send(&pdu).await?;
        }
        Ok(())
    }

    /// Sends an A-ABORT (service provider, `reason`) and shuts the stream down; errors are
    /// ignored, the association is over either way.
    pub(crate) async fn abort(&mut self, reason: AbortRQServiceProviderReason) {
        let pdu = Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(reason),
        };
        let _ = self.send(&pdu).await;
        self.close().await;
    }

    /// Shuts the stream down.
    pub(crate) async fn close(&mut self) {
        let _ = tokio::time::timeout(self.read_timeout, self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pdu_claiming_4_gib_is_refused_from_its_header() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut wire = Wire::new(server, 16384, Duration::from_secs(1));
        client
            .write_all(&[0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0])
            .await
            .unwrap();
        let err = wire.receive(Duration::from_secs(1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                WireError::TooLarge {
                    pdu_type: 4,
                    declared: u32::MAX,
                    limit: 16384
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn commands_are_split_to_fit_the_peer() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut wire = Wire::new(server, 16384, Duration::from_secs(1));
        wire.peer_max_pdu = 100;
        wire.send_command(3, vec![7u8; 250]).await.unwrap();
        let mut reader = Wire::new(client, 16384, Duration::from_secs(1));
        let mut got = Vec::new();
        loop {
            let Pdu::PData { data } = reader.receive(Duration::from_secs(1)).await.unwrap() else {
                panic!("expected P-DATA");
            };
            assert_eq!(data.len(), 1);
            assert!(data[0].data.len() <= 94);
            got.extend_from_slice(&data[0].data);
            if data[0].is_last {
                break;
            }
        }
        assert_eq!(got, vec![7u8; 250]);
    }
}
