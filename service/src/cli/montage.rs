//! The montage of `diptych search --montage out.png`: the query in the first column and the hits
//! after it, best first; the top row shows each image (the query's pre-processed input, each
//! hit's reconstruction from its codes), the bottom row its normal-appearing image x̃.

use std::path::Path;

use anyhow::Context;
use diptych::api::v1::image_service_client::ImageServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    DecomposeRequest, EncodedImage, ImageFormat, Query, SearchMode, SearchRequest, SearchResponse,
    SliceRef, encoded_image, query,
};
use diptych_service::catalog::UidLookup;
use image::{GrayImage, ImageReader};

use super::source::Source;
use super::{Connection, MAX_MESSAGE_BYTES, refused};

/// Gap between tiles, in pixels.
const GAP: u32 = 4;

/// Builds and writes the montage of `answer` to the search for `query` (its single source, or
/// the normal side of a composite).
pub async fn write(
    channel: Connection,
    query: &Source,
    answer: &SearchResponse,
    path: &Path,
) -> anyhow::Result<()> {
    let (top, bottom) = query_tiles(channel, query).await?;
    let mut columns = vec![(top, bottom)];
    for hit in &answer.hits {
        let (Some(t), Some(b)) = (&hit.thumbnail, &hit.normal_appearing) else {
            anyhow::bail!("the server sent no thumbnails; it needs include_thumbnails");
        };
        columns.push((decode(t)?, decode(b)?));
    }
    let size = columns[0].0.width();
    let width = columns.len() as u32 * (size + GAP) - GAP;
    let mut sheet = GrayImage::from_pixel(width, 2 * size + GAP, image::Luma([40]));
    for (i, (top, bottom)) in columns.iter().enumerate() {
        let x = i as u32 * (size + GAP);
        image::imageops::overlay(&mut sheet, top, x.into(), 0);
        image::imageops::overlay(&mut sheet, bottom, x.into(), (size + GAP).into());
    }
    sheet
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// The query's image and normal-appearing image.
async fn query_tiles(
    channel: Connection,
    query: &Source,
) -> anyhow::Result<(GrayImage, GrayImage)> {
    match query {
        Source::File(path, frame) => {
            let mut client = ImageServiceClient::new(channel)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let bytes = tokio::fs::read(path).await?;
            let d = client
                .decompose(DecomposeRequest {
                    image: Some(diptych::api::v1::ImageInput {
                        source: Some(diptych::api::v1::image_input::Source::Dicom(bytes)),
                        frame: *frame,
                    }),
                    format: ImageFormat::Png as i32,
                })
                .await
                .map_err(|s| refused("/diptych.v1.ImageService/Decompose", s))?
                .into_inner();
            let (Some(input), Some(x_tilde)) = (d.input, d.normal_appearing) else {
                anyhow::bail!("Decompose answered without images");
            };
            Ok((decode(&input)?, decode(&x_tilde)?))
        }
        Source::Uid(uid, frame) => {
            // An indexed slice: its own reconstruction, found by an exact search restricted to it.
            let mut client =
                SearchServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let answer = client
                .search(SearchRequest {
                    query: Some(Query {
                        source: Some(query::Source::Indexed(SliceRef {
                            sop_instance_uid: uid.to_string(),
                            frame: *frame,
                        })),
                    }),
                    mode: SearchMode::Combined as i32,
                    // The checked UID written as a filter: digits and dots only, so the server's
                    // filter parser reads exactly this lookup.
                    filter: UidLookup::instance(uid).frame(*frame).to_filter(),
                    top_k: 1,
                    include_thumbnails: true,
                    ..SearchRequest::default()
                })
                .await
                .map_err(|s| refused("/diptych.v1.SearchService/Search", s))?
                .into_inner();
            let hit = answer
                .hits
                .first()
                .context("the query slice is not indexed")?;
            let (Some(t), Some(b)) = (&hit.thumbnail, &hit.normal_appearing) else {
                anyhow::bail!("the server sent no thumbnails");
            };
            Ok((decode(t)?, decode(b)?))
        }
    }
}

fn decode(image: &EncodedImage) -> anyhow::Result<GrayImage> {
    let Some(encoded_image::Data::Png(png)) = &image.data else {
        anyhow::bail!("expected a PNG image");
    };
    Ok(
        ImageReader::with_format(std::io::Cursor::new(png), image::ImageFormat::Png)
            .decode()
            .context("decoding a PNG from the server")?
            .to_luma8(),
    )
}
