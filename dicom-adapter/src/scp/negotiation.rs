//! Association negotiation: which callers may associate, which presentation contexts are
//! accepted, and with which transfer syntax.
//!
//! dicom-ul's `ServerAssociationOptions` takes the first transfer syntax *the peer* lists that it
//! supports and can only reject permanently; diptych answers the A-ASSOCIATE-RQ itself (with
//! dicom-ul's PDU types) so that it can prefer uncompressed syntaxes, offer only what the built
//! decoders decode, check the caller's host, and reject transiently when busy.

use std::collections::HashMap;
use std::net::IpAddr;

use dicom_core::dictionary::UidDictionary;
use dicom_dictionary_std::StandardSopClassDictionary;
use dicom_dictionary_std::uids;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ,
    PresentationContextProposed, PresentationContextResult, PresentationContextResultReason,
    UserVariableItem,
};

use super::allow_list::AllowList;

/// The DICOM application context name (PS3.7 A.2.1).
const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// Prefix of the Storage Service Class SOP classes (PS3.4 B.5).
const STORAGE_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.";
/// Implementation Class UID announced to peers (a 2.25 UUID-derived UID fixed for diptych).
pub(crate) const IMPLEMENTATION_CLASS_UID: &str = "2.25.155003478221614373461553406536862318210";
/// Implementation Version Name announced to peers (at most 16 characters).
pub(crate) const IMPLEMENTATION_VERSION_NAME: &str = "DIPTYCH_0";
/// Transfer syntaxes whose pixel data lives elsewhere (JPIP references): never decodable here.
const REFERENCED_PIXEL_DATA: [&str; 4] = [
    "1.2.840.10008.1.2.4.94",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.204",
    "1.2.840.10008.1.2.4.205",
];

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptedContext {
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// The transfer syntax chosen for it.
    pub transfer_syntax: String,
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// The peer's AE title, trimmed.
    pub calling_ae: String,
    /// Largest PDU length the peer accepts (its "maximum length receivable"; 0 means no limit).
    pub peer_max_pdu: u32,
    /// Accepted presentation contexts by id.
    pub contexts: HashMap<u8, AcceptedContext>,
}

/// Why an association request was rejected, for the log (no patient data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The protocol version lacks bit 0.
    ProtocolVersion,
    /// The application context is not DICOM's.
    ApplicationContext,
    /// The called AE title is not this node's.
    CalledAeTitle,
    /// The calling AE title (or its host) is not on the allow-list.
    CallingAeTitle,
    /// Too many associations at once (transient).
    Busy,
}

impl Rejection {
    /// The A-ASSOCIATE-RJ that says so.
    pub(crate) fn pdu(self) -> AssociationRJ {
        use AssociationRJServiceUserReason as User;
        let (result, source) = match self {
            Self::ProtocolVersion => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceProviderASCE(
                    AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                ),
            ),
            Self::ApplicationContext => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::ApplicationContextNameNotSupported),
            ),
            Self::CalledAeTitle => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::CalledAETitleNotRecognized),
            ),
            Self::CallingAeTitle => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::CallingAETitleNotRecognized),
            ),
            Self::Busy => (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(
                    dicom_ul::pdu::AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                ),
            ),
        };
        AssociationRJ { result, source }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ProtocolVersion => "protocol version not supported",
            Self::ApplicationContext => "application context name not supported",
            Self::CalledAeTitle => "called AE title is not this node's",
            Self::CallingAeTitle => "calling AE title (or its host) is not on the allow-list",
            Self::Busy => "too many associations at once",
        })
    }
}

/// What the listener accepts: its AE title, who may call, its receive limit.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// This node's AE title.
    pub ae_title: String,
    /// The allow-list (empty: anyone), consulted for each association.
    pub allowed_callers: AllowList,
    /// The maximum PDU length announced to peers.
    pub max_pdu_length: u32,
    /// Transfer syntaxes accepted, from the registry of this build.
    pub transfer_syntaxes: Vec<String>,
}

impl Policy {
    /// Answers an association request from `peer`: the A-ASSOCIATE-AC and what was agreed, or
    /// why it is rejected.
    pub(crate) fn negotiate(
        &self,
        request: &AssociationRQ,
        peer: IpAddr,
    ) -> Result<(AssociationAC, Negotiated), Rejection> {
        if request.protocol_version & 1 == 0 {
            return Err(Rejection::ProtocolVersion);
        }
        if trim_uid(&request.application_context_name) != APPLICATION_CONTEXT {
            return Err(Rejection::ApplicationContext);
        }
        if request.called_ae_title.trim() != self.ae_title.trim() {
            return Err(Rejection::CalledAeTitle);
        }
        let calling_ae = request.calling_ae_title.trim().to_string();
        if !self.allowed_callers.allows(&calling_ae, peer) {
            return Err(Rejection::CallingAeTitle);
        }
        let peer_max_pdu = request
            .user_variables
            .iter()
            .find_map(|item| match item {
                UserVariableItem::MaxLength(len) => Some(*len),
                _ => None,
            })
            .unwrap_or(0);

        let mut results = Vec::with_capacity(request.presentation_contexts.len());
        let mut contexts = HashMap::new();
        for proposed in &request.presentation_contexts {
            let (reason, transfer_syntax) = self.choose(proposed);
            if reason == PresentationContextResultReason::Acceptance {
                contexts.insert(
                    proposed.id,
                    AcceptedContext {
                        abstract_syntax: trim_uid(&proposed.abstract_syntax).to_string(),
                        transfer_syntax: transfer_syntax.clone(),
                    },
                );
            }
            results.push(PresentationContextResult {
                id: proposed.id,
                reason,
                transfer_syntax,
            });
        }
        let accept = AssociationAC {
            protocol_version: 1,
            calling_ae_title: request.calling_ae_title.clone(),
            called_ae_title: request.called_ae_title.clone(),
            application_context_name: APPLICATION_CONTEXT.to_string(),
            presentation_contexts: results,
            user_variables: vec![
                UserVariableItem::MaxLength(self.max_pdu_length),
                UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
                UserVariableItem::ImplementationVersionName(
                    IMPLEMENTATION_VERSION_NAME.to_string(),
                ),
            ],
        };
        Ok((
            accept,
            Negotiated {
                calling_ae,
                peer_max_pdu,
                contexts,
            },
        ))
    }

    /// The result for one proposed context: acceptance with the preferred transfer syntax, or
    /// the reason for refusal.
    fn choose(
        &self,
        proposed: &PresentationContextProposed,
    ) -> (PresentationContextResultReason, String) {
        let abstract_syntax = trim_uid(&proposed.abstract_syntax);
        let offered: Vec<&str> = proposed
            .transfer_syntaxes
            .iter()
            .map(|ts| trim_uid(ts))
            .collect();
        let fallback = uids::IMPLICIT_VR_LITTLE_ENDIAN.to_string();
        if !(abstract_syntax == uids::VERIFICATION || is_storage_sop_class(abstract_syntax)) {
            return (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                fallback,
            );
        }
        let acceptable = |ts: &&str| self.transfer_syntaxes.iter().any(|ours| ours == ts);
        let preferred = [
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ]
        .into_iter()
        .find(|ts| offered.contains(ts) && acceptable(ts))
        .or_else(|| offered.iter().copied().find(acceptable));
        match preferred {
            Some(ts) => (PresentationContextResultReason::Acceptance, ts.to_string()),
            None => (
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                fallback,
            ),
        }
    }
}

/// True for the SOP classes of the Storage Service Class that the standard dictionary knows,
/// retired ones included (image and non-image alike: the sink tells them apart).
pub fn is_storage_sop_class(uid: &str) -> bool {
    uid.starts_with(STORAGE_PREFIX)
        && StandardSopClassDictionary
            .by_uid(uid)
            .is_some_and(|entry| entry.alias.contains("Storage"))
}

/// The transfer syntaxes this build can both parse and decode (`can_decode_all`), without the
/// JPIP-referenced ones: explicit VR little endian first, then implicit, then the rest by UID.
pub fn decodable_transfer_syntaxes() -> Vec<String> {
    let mut found: Vec<String> = TransferSyntaxRegistry
        .iter()
        .filter(|ts| ts.can_decode_all() && !REFERENCED_PIXEL_DATA.contains(&ts.uid()))
        .map(|ts| ts.uid().to_string())
        .collect();
    found.sort_by_key(|uid| {
        let rank = match uid.as_str() {
            uids::EXPLICIT_VR_LITTLE_ENDIAN => 0,
            uids::IMPLICIT_VR_LITTLE_ENDIAN => 1,
            _ => 2,
        };
        (rank, uid.clone())
    });
    found.dedup();
    found
}

/// A UID without the trailing NUL or space padding of its encoding.
pub(crate) fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scp::AllowedCaller;

    fn policy() -> Policy {
        Policy {
            ae_title: "DIPTYCH".to_string(),
            allowed_callers: AllowList::default(),
            max_pdu_length: 16384,
            transfer_syntaxes: decodable_transfer_syntaxes(),
        }
    }

    fn request(contexts: Vec<PresentationContextProposed>) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "MODALITY".to_string(),
            called_ae_title: "DIPTYCH".to_string(),
            application_context_name: APPLICATION_CONTEXT.to_string(),
            presentation_contexts: contexts,
            user_variables: vec![UserVariableItem::MaxLength(32768)],
        }
    }

    fn context(id: u8, abstract_syntax: &str, syntaxes: &[&str]) -> PresentationContextProposed {
        PresentationContextProposed {
            id,
            abstract_syntax: abstract_syntax.to_string(),
            transfer_syntaxes: syntaxes.iter().map(|s| s.to_string()).collect(),
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn uncompressed_explicit_is_preferred_whatever_the_peer_order() {
        let rq = request(vec![
            context(
                1,
                uids::CT_IMAGE_STORAGE,
                &[
                    uids::JPEG_BASELINE8_BIT,
                    uids::IMPLICIT_VR_LITTLE_ENDIAN,
                    uids::EXPLICIT_VR_LITTLE_ENDIAN,
                ],
            ),
            context(
                3,
                uids::MR_IMAGE_STORAGE,
                &[uids::JPEG_BASELINE8_BIT, uids::IMPLICIT_VR_LITTLE_ENDIAN],
            ),
            context(5, uids::MR_IMAGE_STORAGE, &[uids::JPEG_BASELINE8_BIT]),
        ]);
        let (ac, negotiated) = policy().negotiate(&rq, LOCAL).unwrap();
        assert_eq!(
            negotiated.contexts[&1].transfer_syntax,
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(
            negotiated.contexts[&3].transfer_syntax,
            uids::IMPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(
            negotiated.contexts[&5].transfer_syntax,
            uids::JPEG_BASELINE8_BIT
        );
        assert_eq!(negotiated.peer_max_pdu, 32768);
        assert!(
            ac.presentation_contexts
                .iter()
                .all(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        );
    }

    #[test]
    fn unknown_syntaxes_and_classes_are_refused_per_context() {
        let rq = request(vec![
            context(1, uids::CT_IMAGE_STORAGE, &["1.2.3.4.5.6"]),
            context(3, "1.2.3.4.999", &[uids::EXPLICIT_VR_LITTLE_ENDIAN]),
            context(
                5,
                uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
                &[uids::EXPLICIT_VR_LITTLE_ENDIAN],
            ),
            context(7, uids::VERIFICATION, &[uids::IMPLICIT_VR_LITTLE_ENDIAN]),
        ]);
        let (ac, negotiated) = policy().negotiate(&rq, LOCAL).unwrap();
        let reasons: Vec<_> = ac
            .presentation_contexts
            .iter()
            .map(|pc| pc.reason.clone())
            .collect();
        assert_eq!(
            reasons,
            vec![
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                PresentationContextResultReason::Acceptance,
            ]
        );
        assert_eq!(negotiated.contexts.len(), 1);
    }

    #[test]
    fn storage_classes_include_images_and_documents_but_not_queries() {
        for uid in [
            uids::CT_IMAGE_STORAGE,
            uids::ENHANCED_MR_IMAGE_STORAGE,
            uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
            uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
            uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
            uids::COMPREHENSIVE_SR_STORAGE,
            uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
            uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
            uids::RAW_DATA_STORAGE,
            uids::ENCAPSULATED_PDF_STORAGE,
        ] {
            assert!(is_storage_sop_class(uid), "{uid}");
        }
        assert!(!is_storage_sop_class(
            uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND
        ));
        assert!(!is_storage_sop_class(uids::VERIFICATION));
    }

    #[test]
    fn decodable_syntaxes_cover_the_build_and_start_uncompressed() {
        let syntaxes = decodable_transfer_syntaxes();
        assert_eq!(syntaxes[0], uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(syntaxes[1], uids::IMPLICIT_VR_LITTLE_ENDIAN);
        for uid in [
            #[allow(deprecated)]
            uids::EXPLICIT_VR_BIG_ENDIAN,
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            uids::JPEG_BASELINE8_BIT,
            uids::JPEG_EXTENDED12_BIT,
            uids::JPEG_LOSSLESS,
            uids::JPEG_LOSSLESS_SV1,
            uids::JPEGLS_LOSSLESS,
            uids::JPEGLS_NEAR_LOSSLESS,
            uids::JPEG2000_LOSSLESS,
            uids::JPEG2000,
            uids::RLE_LOSSLESS,
        ] {
            assert!(
                syntaxes.iter().any(|s| s == uid),
                "{uid} missing from {syntaxes:?}"
            );
        }
        assert!(!syntaxes.iter().any(|s| s == "1.2.840.10008.1.2.4.95"));
    }

    #[test]
    fn access_control_checks_called_title_calling_title_and_host() {
        let mut policy = policy();
        policy.allowed_callers = AllowList::new(vec![
            AllowedCaller {
                ae_title: "MODALITY".to_string(),
                host: Some(LOCAL),
            },
            AllowedCaller {
                ae_title: "PACS".to_string(),
                host: None,
            },
        ]);
        let rq = request(vec![context(
            1,
            uids::VERIFICATION,
            &[uids::IMPLICIT_VR_LITTLE_ENDIAN],
        )]);
        assert!(policy.negotiate(&rq, LOCAL).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(policy.negotiate(&rq, mapped).is_ok());
        let elsewhere: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            policy.negotiate(&rq, elsewhere).unwrap_err(),
            Rejection::CallingAeTitle
        );
        let mut pacs = rq.clone();
        pacs.calling_ae_title = "PACS            ".to_string();
        assert!(policy.negotiate(&pacs, elsewhere).is_ok());
        let mut stranger = rq.clone();
        stranger.calling_ae_title = "STRANGER".to_string();
        assert_eq!(
            policy.negotiate(&stranger, LOCAL).unwrap_err(),
            Rejection::CallingAeTitle
        );
        let mut wrong_called = rq.clone();
        wrong_called.called_ae_title = "ORTHANC".to_string();
        assert_eq!(
            policy.negotiate(&wrong_called, LOCAL).unwrap_err(),
            Rejection::CalledAeTitle
        );
        assert_eq!(Rejection::Busy.pdu().result, AssociationRJResult::Transient);
    }
}
