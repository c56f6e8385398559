//! The server's own input parsers on arbitrary bytes: the token file, and resource edits (a
//! JSON body put, merge-patched and deleted at a path). Never panics; an accepted put is found
//! again under its URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_server::auth::Tokens;
use palisade_server::policy::{self, Path, KINDS};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Tokens::parse("tokens", &text);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let kind = &KINDS[selector as usize % KINDS.len()];
    let path = Path {
        kind,
        name: "parent".into(),
        child: (selector & 0x80 != 0 && kind.child.is_some()).then(|| "child".into()),
    };
    let parent = serde_json::json!({"type": kind.arm_type, "name": "parent", "properties": body.clone()});
    let resources = vec![parent, body.clone()];
    if let Ok(out) = policy::put(&resources, &path, body.clone()) {
        let slot = policy::locate(&out, &path).expect("a put resource is found");
        let mut v = policy::get(&out, slot, &path).clone();
        policy::merge_patch(&mut v, &body);
        let _ = policy::put(&out, &path, v);
        let _ = policy::delete(&out, &path);
    }
});
