//! The montage of `diptych search --montage out.png`: the query in the first column and the hits
//! after it, best first; the top row shows each image (the query's pre-processed input, each
//! hit's reconstruction from its codes), the bottom row its normal-appearing image x̃.
//!
//! Every column has a title — `QUERY`, or the hit's rank and distance (`#1 D=1281`) — and every
//! tile says what it shows in its corner (`INPUT`, `RECONSTRUCTION`, `NORMAL-APPEARING`), so a
//! reader tells the query from a hit and x̂ from x̃ without the command line at hand.

use std::path::Path;

use anyhow::Context;
use diptych::api::v1::image_service_client::ImageServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    DecomposeRequest, EncodedImage, ImageFormat, Query, SearchMode, SearchRequest, SearchResponse,
    SliceRef, encoded_image, query,
};
use diptych_service::catalog::UidLookup;
use image::{GrayImage, ImageReader, Rgb, RgbImage};

use super::lettering::text;
use super::source::Source;
use super::{Connection, MAX_MESSAGE_BYTES, refused};

/// Gap between tiles, in pixels.
const GAP: u32 = 4;
/// Height of the column titles, in pixels.
const TITLE: u32 = 14;
const BACKGROUND: Rgb<u8> = Rgb([40, 40, 40]);
const QUERY_INK: Rgb<u8> = Rgb([120, 200, 255]);
const HIT_INK: Rgb<u8> = Rgb([255, 230, 90]);

/// One column of the montage: a title and two labelled tiles.
#[derive(Debug, Clone)]
pub struct Column {
    /// `QUERY`, or the hit's rank and distance.
    pub title: String,
    /// The query (rather than a hit): its title in another colour.
    pub is_query: bool,
    /// The upper tile and what it shows.
    pub top: (GrayImage, &'static str),
    /// The lower tile (x̃) and what it shows.
    pub bottom: (GrayImage, &'static str),
}

/// The title of hit `rank` at `distance`: whole numbers for large distances, two decimals for
/// small ones.
pub fn hit_title(rank: u32, distance: f64) -> String {
    if distance.abs() >= 100.0 {
        format!("#{rank} D={distance:.0}")
    } else {
        format!("#{rank} D={distance:.2}")
    }
}

/// Draws the columns side by side, each under its title, each tile labelled in its corner.
pub fn render(columns: &[Column]) -> RgbImage {
    let size = columns.first().map_or(0, |c| c.top.0.width());
    let width = (columns.len() as u32 * (size + GAP)).saturating_sub(GAP);
    let mut sheet = RgbImage::from_pixel(width, TITLE + 2 * size + GAP, BACKGROUND);
    for (i, column) in columns.iter().enumerate() {
        let x = i as u32 * (size + GAP);
        let ink = if column.is_query { QUERY_INK } else { HIT_INK };
        text(&mut sheet, x + 1, 3, &column.title, 1, ink);
        for (y, (tile, label)) in [(TITLE, &column.top), (TITLE + size + GAP, &column.bottom)] {
            let rgb = image::DynamicImage::ImageLuma8(tile.clone()).to_rgb8();
            image::imageops::overlay(&mut sheet, &rgb, x.into(), y.into());
            let w = (label.len() as u32 * 6 + 2).min(size);
            for yy in y..y + 10 {
                for xx in x..x + w {
                    sheet.put_pixel(xx, yy, Rgb([0, 0, 0]));
                }
            }
            text(&mut sheet, x + 1, y + 1, label, 1, Rgb([235, 235, 235]));
        }
    }
    sheet
}

/// What the query's upper tile shows when it is a file: the pre-processed input.
const INPUT: &str = "INPUT";
/// x̂, decoded from both codes.
const RECONSTRUCTION: &str = "RECONSTRUCTION";
/// x̃, decoded from the normal code alone.
const NORMAL_APPEARING: &str = "NORMAL-APPEARING";

/// Builds and writes the montage of `answer` to the search for `query` (its single source, or
/// the normal side of a composite).
pub async fn write(
    channel: Connection,
    query: &Source,
    answer: &SearchResponse,
    path: &Path,
) -> anyhow::Result<()> {
    let (top, bottom) = query_tiles(channel, query).await?;
    let top_label = match query {
        Source::File(..) => INPUT,
        Source::Uid(..) => RECONSTRUCTION,
    };
    let mut columns = vec![Column {
        title: "QUERY".into(),
        is_query: true,
        top: (top, top_label),
        bottom: (bottom, NORMAL_APPEARING),
    }];
    for hit in &answer.hits {
        let (Some(t), Some(b)) = (&hit.thumbnail, &hit.normal_appearing) else {
            anyhow::bail!("the server sent no thumbnails; it needs include_thumbnails");
        };
        columns.push(Column {
            title: hit_title(hit.rank, hit.distance),
            is_query: false,
            top: (decode(t)?, RECONSTRUCTION),
            bottom: (decode(b)?, NORMAL_APPEARING),
        });
    }
    render(&columns)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_titled_and_tiles_labelled() {
        let tile = |v| GrayImage::from_pixel(32, 32, image::Luma([v]));
        let column = |title: &str, is_query| Column {
            title: title.into(),
            is_query,
            top: (tile(90), INPUT),
            bottom: (tile(90), NORMAL_APPEARING),
        };
        let sheet = render(&[column("QUERY", true), column(&hit_title(1, 1280.97), false)]);
        assert_eq!(
            (sheet.width(), sheet.height()),
            (2 * 32 + GAP, TITLE + 2 * 32 + GAP)
        );
        let count = |ink: Rgb<u8>, x0: u32| {
            (x0..x0 + 32)
                .flat_map(|x| (0..TITLE).map(move |y| (x, y)))
                .filter(|&(x, y)| *sheet.get_pixel(x, y) == ink)
                .count()
        };
        assert!(count(QUERY_INK, 0) > 20, "the query's title is drawn");
        assert!(count(HIT_INK, 32 + GAP) > 20, "the hit's title is drawn");
        assert_eq!(count(HIT_INK, 0), 0, "the query is not titled like a hit");
        // The label's black box and letters sit in the tile's corner; the tile shows beyond it.
        assert_eq!(*sheet.get_pixel(0, TITLE), Rgb([0, 0, 0]));
        assert_eq!(*sheet.get_pixel(31, TITLE + 31), Rgb([90, 90, 90]));
        assert_eq!(hit_title(1, 1280.97), "#1 D=1281");
        assert_eq!(hit_title(2, 2.5), "#2 D=2.50");
    }
}
