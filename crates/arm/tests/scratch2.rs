use palisade_arm::{evaluate_standalone, expand, Options};
use serde_json::json;
#[test]
fn measure() {
    let _ = evaluate_standalone("[string(string(string(1)))]");
    eprintln!("----");
    let t = json!({"variables": {"a": "[variables('b')]", "b": {"x": {"y": "[variables('c')]"}}, "c": "z"}, "resources": [{"type": "A/b", "name": "[variables('a')]"}]});
    let _ = expand(&t, &Options::default());
}
