//! The console's own stylesheet and script, compiled into the binary (no CDN, no build step).

use crate::Console;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const CSS: &str = include_str!("../static/console.css");
const JS: &str = include_str!("../static/console.js");
/// asciinema-player (Apache-2.0), vendored: see static/vendor/asciinema-player/VERSION.
const PLAYER_JS: &str = include_str!("../static/vendor/asciinema-player/asciinema-player.min.js");
const PLAYER_CSS: &str = include_str!("../static/vendor/asciinema-player/asciinema-player.css");

pub fn router() -> Router<Console> {
    Router::new()
        .route(
            "/ui/static/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/ui/static/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/ui/static/vendor/asciinema-player.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", PLAYER_JS) }),
        )
        .route(
            "/ui/static/vendor/asciinema-player.css",
            get(|| async { asset("text/css; charset=utf-8", PLAYER_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}
