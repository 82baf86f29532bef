//! `diptych stats` and `diptych delete`.

use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::ingest_service_client::IngestServiceClient;
use diptych::api::v1::{
    DeleteRequest, DicomRef, GetCapabilitiesRequest, GetIndexStatsRequest, dicom_ref,
};

use super::{ServerArgs, connect, refused};

/// Prints the index statistics and the server's capabilities.
pub async fn stats(server: &ServerArgs) -> anyhow::Result<()> {
    let mut client = InfoServiceClient::new(connect(server).await?);
    let s = client
        .get_index_stats(GetIndexStatsRequest {})
        .await
        .map_err(|s| refused("/diptych.v1.InfoService/GetIndexStats", s))?
        .into_inner();
    let c = client
        .get_capabilities(GetCapabilitiesRequest {})
        .await
        .map_err(|s| refused("/diptych.v1.InfoService/GetCapabilities", s))?
        .into_inner();
    println!("model            {}", s.model_id);
    println!("records (slices) {}", s.records);
    println!("instances        {}", s.instances);
    println!("series           {}", s.series);
    println!("studies          {}", s.studies);
    println!("patients         {}", s.patients);
    println!("pending          {}", s.pending);
    println!("non-image        {}", s.non_image);
    println!("code bytes       {}", s.code_bytes);
    println!("catalog bytes    {}", s.catalog_bytes);
    println!("execution        {}", c.execution_provider);
    let port = |p: u32| {
        if p == 0 {
            "off".to_string()
        } else {
            p.to_string()
        }
    };
    if !c.dicom_ae_title.is_empty() {
        println!(
            "dicom            {} (port {}, TLS port {})",
            c.dicom_ae_title,
            port(c.dicom_port),
            port(c.dicom_tls_port)
        );
    }
    println!(
        "filter fields    {}",
        c.filter_fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// What `diptych delete` removes.
#[derive(Debug, Clone)]
pub enum Level {
    /// A Patient ID.
    Patient(String),
    /// A Study Instance UID.
    Study(String),
    /// A Series Instance UID.
    Series(String),
    /// A SOP Instance UID.
    Instance(String),
}

/// Deletes every record of a patient, study, series or instance.
pub async fn delete(server: &ServerArgs, level: Level) -> anyhow::Result<()> {
    let mut client = IngestServiceClient::new(connect(server).await?);
    let level = match level {
        Level::Patient(id) => dicom_ref::Level::PatientId(id),
        Level::Study(id) => dicom_ref::Level::StudyInstanceUid(id),
        Level::Series(id) => dicom_ref::Level::SeriesInstanceUid(id),
        Level::Instance(id) => dicom_ref::Level::SopInstanceUid(id),
    };
    let answer = client
        .delete(DeleteRequest {
            target: Some(DicomRef { level: Some(level) }),
        })
        .await
        .map_err(|s| refused("/diptych.v1.IngestService/Delete", s))?
        .into_inner();
    println!(
        "deleted {} records ({} instances)",
        answer.records_deleted, answer.instances_deleted
    );
    Ok(())
}
