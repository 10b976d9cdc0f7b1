//! A minimal graphql-transport-ws client: subscribes and prints every
//! message subcar sends, one JSON document a line.
//!
//! ```sh
//! cargo run --example subscribe
//! cargo run --example subscribe -- 'subscription { incidentUpdated(severities: [P1]) { id title } }'
//! ```
//!
//! `SUBCAR_URL` (default `ws://127.0.0.1:4000/graphql`) changes the address;
//! `SUBCAR_TOKEN` is sent as `connectionParams.Authorization`.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const DEFAULT_QUERY: &str = "subscription { incidentUpdated { id title severity updatedAt } }";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SUBCAR_URL").unwrap_or_else(|_| "ws://127.0.0.1:4000/graphql".into());
    let query = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_QUERY.into());
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let init = match std::env::var("SUBCAR_TOKEN") {
        Ok(token) => json!({"type": "connection_init", "payload": {"Authorization": token}}),
        Err(_) => json!({"type": "connection_init"}),
    };
    ws.send(Message::text(init.to_string())).await?;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::text(subscribe.to_string())).await?;
    eprintln!("subscribed on {url}: {query}");
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) => println!("{text}"),
            Message::Close(frame) => {
                eprintln!("closed: {frame:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
