//! Fuzzes the parsing of graphql-transport-ws text frames into
//! `ClientMessage` (what a client sends over the socket), and the server
//! frames built from what was parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subcar::graphql::GraphQLError;
use subcar::transport::protocol::{ClientMessage, CloseCode, Frame, MAX_CLOSE_REASON, Outbound};

fuzz_target!(|data: &[u8]| {
    let msg = match ClientMessage::parse(data) {
        Ok(msg) => msg,
        Err(reason) => {
            // The reason becomes a 4400 close frame: it must fit one.
            let Outbound::Close(_, cut) = Outbound::close(CloseCode::BadRequest, reason) else {
                unreachable!()
            };
            assert!(cut.len() <= MAX_CLOSE_REASON);
            return;
        }
    };
    // A parsed message round-trips through the frames the session answers with.
    match &msg {
        ClientMessage::Subscribe { id, payload } => {
            assert!(!id.is_empty());
            let err = Frame::error(id, &[GraphQLError::new(payload.query.clone())]);
            serde_json::from_slice::<serde_json::Value>(err.as_bytes()).expect("error frame is JSON");
            let next = Frame::next(id, b"{\"data\":null}");
            serde_json::from_slice::<serde_json::Value>(next.as_bytes()).expect("next frame is JSON");
            let done = Frame::complete(id);
            serde_json::from_slice::<serde_json::Value>(done.as_bytes()).expect("complete frame is JSON");
        }
        ClientMessage::Complete { id } => assert!(!id.is_empty()),
        ClientMessage::Ping { payload } | ClientMessage::Pong { payload } => {
            let pong = Frame::pong(payload.as_ref());
            serde_json::from_slice::<serde_json::Value>(pong.as_bytes()).expect("pong frame is JSON");
        }
        ClientMessage::ConnectionInit { .. } => {}
    }
});
