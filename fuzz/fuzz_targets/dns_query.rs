//! The DNS proxy's query reader on arbitrary datagrams: never panics; a reply without the
//! upstream is a response carrying the query's id; a query's answer (here a SERVFAIL) encodes
//! within the UDP limit and parses back with the same id and question.
#![no_main]

use hickory_proto::op::{Message, MessageType, ResponseCode};
use libfuzzer_sys::fuzz_target;
use palisade_gateway::dns::{encode, read_request, response, Request};

fuzz_target!(|data: &[u8]| {
    match read_request(data) {
        Request::Ignore => {}
        Request::Reply(m) => {
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id, u16::from_be_bytes([data[0], data[1]]));
            let bytes = encode(&m, 512).expect("a reply encodes");
            assert!(Message::from_vec(&bytes).is_ok());
        }
        Request::Query(q) => {
            let bytes = encode(&response(&q, Err(ResponseCode::ServFail)), 512)
                .expect("a response encodes");
            assert!(bytes.len() <= 512 || Message::from_vec(&bytes).is_ok_and(|m| m.metadata.truncation));
            let m = Message::from_vec(&bytes).expect("a response parses");
            assert_eq!(m.metadata.id, q.metadata.id);
            assert_eq!(m.queries, q.queries);
        }
    }
});
