//! The page at `/` of the HTTP port: what diptych sees, for people who would rather look than
//! read — a query decomposed (input, x̂, x̃, segmentation, abnormality score) with its hits, the
//! three modes side by side, composites, the index and the studies announced on Watch.
//!
//! The page is a client of the public API and nothing more: its script (`assets/app.js`) calls
//! the gRPC port over gRPC-Web ([`crate::grpc::web`]) with the caller's token, exactly as a
//! viewer extension would, so it sees only what that token's role allows. The script is built
//! from `web/src/` (TypeScript, with the client generated from `proto/`) by `web/build.sh` and
//! committed; the binary embeds it, so nothing is fetched at run time.
//!
//! | path | what |
//! |---|---|
//! | `/`, `/index.html` | the page |
//! | `/style.css`, `/app.js` | its style and script |
//! | `/page-config.json` | where the page finds the gRPC port: `{"grpc_port": 50051, "grpc_tls": false}` |

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("assets/index.html");
const STYLE_CSS: &str = include_str!("assets/style.css");
const APP_JS: &str = include_str!("assets/app.js");

/// The page's policy: its own script and style, images from data: URLs (the API's PNGs), and
/// calls to any http(s) origin (the gRPC port is another origin; CORS there decides).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     connect-src 'self' http: https:; script-src 'self'; style-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Where the page's script finds the gRPC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PageConfig {
    /// The gRPC port (the page connects to it on the host it was loaded from).
    pub grpc_port: u16,
    /// Whether the gRPC port speaks TLS (then the page uses https://).
    pub grpc_tls: bool,
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The routes of the page, to merge into the HTTP port's router.
pub fn router(config: PageConfig) -> axum::Router {
    let html = || async { asset("text/html; charset=utf-8", INDEX_HTML) };
    let json = serde_json::to_string(&config).expect("the page configuration serializes");
    axum::Router::new()
        .route("/", get(html))
        .route("/index.html", get(html))
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/page-config.json",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    json,
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn the_page_its_assets_and_its_configuration_are_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(PageConfig {
            grpc_port: 50051,
            grpc_tls: false,
        });
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let (status, head, body) = get(addr, "/").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(head.contains("content-security-policy: default-src 'self'"));
        assert!(body.contains(r#"<script src="app.js" defer>"#), "{body}");
        let (status, head, body) = get(addr, "/app.js").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/javascript"), "{head}");
        assert!(
            body.contains("application/grpc-web+proto"),
            "the bundle holds the gRPC-Web client"
        );
        let (status, head, _) = get(addr, "/style.css").await;
        assert_eq!((status, head.contains("text/css")), (200, true));
        let (status, _, body) = get(addr, "/page-config.json").await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"grpc_port":50051,"grpc_tls":false}"#);
        server.abort();
    }
}
