//! Expression functions, one family per test (FMT-4), through the public
//! `evaluate_standalone`.

use palisade_arm::{evaluate_standalone, is_unresolved, EvalError, SyntaxError};
use serde_json::{json, Value};

fn ev(expr: &str) -> Value {
    evaluate_standalone(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn fails(expr: &str) -> String {
    match evaluate_standalone(expr) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{expr} should fail, gave {v}"),
    }
}

#[test]
fn fmt_4_literals_brackets_and_escapes() {
    assert_eq!(ev("plain text"), json!("plain text"));
    assert_eq!(ev("[[not an expression]"), json!("[not an expression]"));
    assert_eq!(ev("[x"), json!("[x"));
    assert_eq!(ev("['it''s']"), json!("it's"));
    assert_eq!(ev("[ 42 ]"), json!(42));
    assert_eq!(ev("[-7]"), json!(-7));
    assert_eq!(ev("[true()]"), json!(true));
    assert_eq!(ev("[false]"), json!(false));
    assert_eq!(ev("[null()]"), json!(null));
    assert!(fails("[]").contains("empty expression"));
    assert!(fails("[concat('a']").contains("invalid expression"));
}

#[test]
fn fmt_4_concat_strings_and_arrays() {
    assert_eq!(ev("[concat('a', 'b', 1, true())]"), json!("ab1True"));
    assert_eq!(
        ev("[concat(createArray(1, 2), createArray(3), json('null'))]"),
        json!([1, 2, 3])
    );
    assert!(fails("[concat(createArray(1), 'x')]").contains("does not mix"));
    assert!(fails("[concat('x', createArray(1))]").contains("does not mix"));
    assert!(fails("[concat()]").contains("at least 1"));
}

#[test]
fn fmt_4_format_and_string_conversions() {
    assert_eq!(
        ev("[format('{0}-{1:N0}-{2}', 'web', 8175133, false())]"),
        json!("web-8,175,133-False")
    );
    assert_eq!(ev("[format('{0:D3}', 7)]"), json!("007"));
    assert!(fails("[format('{3}', 1)]").contains("argument 3"));
    assert_eq!(ev("[string(5)]"), json!("5"));
    assert_eq!(ev("[string(true())]"), json!("True"));
    assert_eq!(
        ev("[string(createObject('a', 1, 'b', createArray('x')))]"),
        json!("{\"a\":1,\"b\":[\"x\"]}")
    );
    assert_eq!(ev("[int('42')]"), json!(42));
    assert_eq!(ev("[int(' -3 ')]"), json!(-3));
    assert!(fails("[int('4x')]").contains("not an integer"));
    assert_eq!(ev("[bool('TRUE')]"), json!(true));
    assert_eq!(ev("[bool(0)]"), json!(false));
    assert_eq!(ev("[json('{\"a\": [1, 2]}').a[1]]"), json!(2));
    assert!(fails("[json('{')]").contains("not valid JSON"));
}

#[test]
fn fmt_4_logic_and_comparison() {
    assert_eq!(ev("[if(equals(1, 1), 'yes', 'no')]"), json!("yes"));
    assert_eq!(ev("[if(false(), reference('x').y, 'safe')]"), json!("safe"));
    assert!(fails("[if('true', 1, 2)]").contains("must be a bool"));
    assert_eq!(ev("[equals('a', 'A')]"), json!(false));
    assert_eq!(
        ev("[equals(createArray(1, 'x'), json('[1, \"x\"]'))]"),
        json!(true)
    );
    assert_eq!(ev("[equals(json('1.0'), 1)]"), json!(true));
    assert_eq!(ev("[not(equals(1, 2))]"), json!(true));
    assert_eq!(ev("[and(true(), true(), false())]"), json!(false));
    assert_eq!(ev("[or(false(), true())]"), json!(true));
    assert_eq!(ev("[or(true(), reference('x').y)]"), json!(true));
    assert!(is_unresolved(&ev("[and(true(), reference('x').y)]")));
    assert_eq!(ev("[greater(2, 1)]"), json!(true));
    assert_eq!(ev("[less('a', 'b')]"), json!(true));
    assert_eq!(ev("[greaterOrEquals(2, 2)]"), json!(true));
    assert_eq!(ev("[lessOrEquals(3, 2)]"), json!(false));
    assert!(fails("[greater(1, 'a')]").contains("two integers or two strings"));
    assert_eq!(ev("[coalesce(null(), json('null'), 'x', 'y')]"), json!("x"));
    assert_eq!(ev("[coalesce(null())]"), json!(null));
}

#[test]
fn fmt_4_integer_arithmetic_is_checked() {
    assert_eq!(ev("[add(2, 3)]"), json!(5));
    assert_eq!(ev("[sub(2, 3)]"), json!(-1));
    assert_eq!(ev("[mul(-4, 3)]"), json!(-12));
    assert_eq!(ev("[div(7, -2)]"), json!(-3));
    assert_eq!(ev("[mod(-7, 3)]"), json!(-1));
    assert!(fails("[div(1, 0)]").contains("division by zero"));
    assert!(fails("[mod(1, 0)]").contains("division by zero"));
    assert!(fails("[add(9223372036854775807, 1)]").contains("overflows"));
    assert!(fails("[div(-9223372036854775808, -1)]").contains("overflows"));
    assert!(fails("[mul(9223372036854775807, 2)]").contains("overflows"));
    assert_eq!(ev("[min(3, 1, 2)]"), json!(1));
    assert_eq!(ev("[max(createArray(3, 9, 2))]"), json!(9));
    assert!(fails("[max(createArray())]").contains("empty"));
    assert_eq!(ev("[range(5, 3)]"), json!([5, 6, 7]));
    assert!(fails("[range(0, 10001)]").contains("between 0 and 10000"));
    assert!(fails("[range(9223372036854775807, 2)]").contains("overflows"));
}

#[test]
fn fmt_4_string_functions() {
    assert_eq!(ev("[length('héllo')]"), json!(5));
    assert_eq!(ev("[toLower('AbC')]"), json!("abc"));
    assert_eq!(ev("[toUpper('AbC')]"), json!("ABC"));
    assert_eq!(ev("[trim('  x ')]"), json!("x"));
    assert_eq!(ev("[replace('a-b-c', '-', '/')]"), json!("a/b/c"));
    assert!(fails("[replace('abc', '', 'x')]").contains("must not be empty"));
    assert_eq!(
        ev("[split('a,b;c', createArray(',', ';'))]"),
        json!(["a", "b", "c"])
    );
    assert_eq!(ev("[split('a,,b', ',')]"), json!(["a", "", "b"]));
    assert_eq!(
        ev("[join(createArray('a', 1, true()), '-')]"),
        json!("a-1-True")
    );
    assert_eq!(ev("[substring('hello', 1, 3)]"), json!("ell"));
    assert_eq!(ev("[substring('hello', 2)]"), json!("llo"));
    assert!(fails("[substring('hello', 3, 5)]").contains("within the string"));
    assert!(fails("[substring('hello', -1, 1)]").contains("within the string"));
    assert_eq!(ev("[indexOf('test', 'T')]"), json!(0));
    assert_eq!(ev("[lastIndexOf('test', 't')]"), json!(3));
    assert_eq!(ev("[indexOf('abc', 'z')]"), json!(-1));
    assert_eq!(ev("[indexOf(createArray('a', 'b'), 'b')]"), json!(1));
    assert_eq!(
        ev("[startsWith('Microsoft.Network', 'microsoft.')]"),
        json!(true)
    );
    assert_eq!(ev("[endsWith('abc', 'BC')]"), json!(true));
    assert_eq!(ev("[contains('abc', 'B')]"), json!(false));
    assert_eq!(ev("[contains(createObject('Key', 1), 'key')]"), json!(true));
    assert_eq!(ev("[contains(createArray(1, 2), 2)]"), json!(true));
    assert_eq!(ev("[padLeft('7', 3, '0')]"), json!("007"));
    assert_eq!(ev("[padLeft(42, 1)]"), json!("42"));
    assert!(fails("[padLeft('7', 3, '00')]").contains("single character"));
    assert!(fails("[padLeft('7', 1000000000)]").contains("too large"));
    assert_eq!(
        ev("[base64('one, two, three')]"),
        json!("b25lLCB0d28sIHRocmVl")
    );
    assert_eq!(
        ev("[base64ToString('b25lLCB0d28sIHRocmVl')]"),
        json!("one, two, three")
    );
    assert_eq!(ev("[base64ToJson(base64('{\"a\": 1}')).a]"), json!(1));
    assert_eq!(ev("[dataUriToString(dataUri('Hello'))]"), json!("Hello"));
    assert_eq!(
        ev("[uri('http://contoso.com/resources/', 'nested/azuredeploy.json')]"),
        json!("http://contoso.com/resources/nested/azuredeploy.json")
    );
    assert_eq!(
        ev("[uriComponentToString(uriComponent('a b/c'))]"),
        json!("a b/c")
    );
}

#[test]
fn fmt_4_array_and_object_functions() {
    assert_eq!(ev("[empty('')]"), json!(true));
    assert_eq!(ev("[empty(createArray(1))]"), json!(false));
    assert_eq!(ev("[empty(json('{}'))]"), json!(true));
    assert_eq!(ev("[first(createArray('a', 'b'))]"), json!("a"));
    assert_eq!(ev("[last('xyz')]"), json!("z"));
    assert_eq!(ev("[first(createArray())]"), json!(null));
    assert_eq!(ev("[take(createArray(1, 2, 3), 2)]"), json!([1, 2]));
    assert_eq!(ev("[skip('hello', 3)]"), json!("lo"));
    assert_eq!(ev("[take('ab', -1)]"), json!(""));
    assert_eq!(
        ev("[union(createArray(1, 2), createArray(2, 3))]"),
        json!([1, 2, 3])
    );
    assert_eq!(
        ev("[union(json('{\"a\": {\"x\": 1}, \"b\": 1}'), json('{\"a\": {\"y\": 2}}'))]"),
        json!({"a": {"x": 1, "y": 2}, "b": 1})
    );
    assert_eq!(
        ev("[intersection(createArray(1, 2, 3), createArray(3, 2, 9))]"),
        json!([2, 3])
    );
    assert_eq!(
        ev("[intersection(json('{\"a\": 1, \"b\": 2}'), json('{\"a\": 1, \"b\": 3}'))]"),
        json!({"a": 1})
    );
    assert_eq!(
        ev("[createObject('a', createArray(1), 'b', null())]"),
        json!({"a": [1], "b": null})
    );
    assert!(fails("[createObject('a')]").contains("even number"));
    assert_eq!(ev("[array('x')]"), json!(["x"]));
    assert_eq!(ev("[array(createArray(1))]"), json!([1]));
    assert_eq!(ev("[length(createObject('a', 1))]"), json!(1));
    assert_eq!(
        ev("[items(json('{\"b\": 2, \"a\": 1}'))]"),
        json!([{"key": "a", "value": 1}, {"key": "b", "value": 2}])
    );
    assert_eq!(
        ev("[objectKeys(json('{\"b\": 2, \"a\": 1}'))]"),
        json!(["b", "a"])
    );
    assert_eq!(ev("[tryGet(json('{\"a\": [5]}'), 'A', 0)]"), json!(5));
    assert_eq!(ev("[tryGet(json('{\"a\": 1}'), 'missing')]"), json!(null));
    assert_eq!(
        ev("[flatten(createArray(createArray(1), createArray(2)))]"),
        json!([1, 2])
    );
    assert_eq!(ev("[json('{\"A\": {\"b\": 1}}').a.B]"), json!(1));
    assert_eq!(ev("[json('{\"a\": 1}')['A']]"), json!(1));
    assert_eq!(ev("[json('{\"a\": 1}').?missing]"), json!(null));
    assert!(fails("[json('{\"a\": 1}').missing]").contains("no property 'missing'"));
    assert!(fails("[createArray(1)[1]]").contains("outside the array"));
    assert!(fails("['x'.length]").contains("cannot read property"));
}

#[test]
fn fmt_4_resource_ids_and_deployment_placeholders() {
    assert_eq!(
        ev("[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet', 'sub')]"),
        json!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/palisade-rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/sub")
    );
    assert_eq!(
        ev("[resourceId('other-rg', 'Microsoft.Network/routeTables', 'rt')]"),
        json!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/other-rg/providers/Microsoft.Network/routeTables/rt")
    );
    assert_eq!(
        ev("[ResourceID('s1', 'g1', 'Microsoft.Network/routeTables', 'rt')]"),
        json!("/subscriptions/s1/resourceGroups/g1/providers/Microsoft.Network/routeTables/rt")
    );
    assert_eq!(
        ev("[subscriptionResourceId('Microsoft.Resources/resourceGroups', 'g')]"),
        json!("/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Resources/resourceGroups/g")
    );
    assert_eq!(
        ev("[extensionResourceId(resourceId('Microsoft.Network/networkSecurityGroups', 'n'), 'Microsoft.Authorization/locks', 'l')]"),
        json!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/palisade-rg/providers/Microsoft.Network/networkSecurityGroups/n/providers/Microsoft.Authorization/locks/l")
    );
    assert!(
        fails("[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet')]")
            .contains("name segment")
    );
    assert_eq!(ev("[resourceGroup().name]"), json!("palisade-rg"));
    assert_eq!(ev("[resourceGroup().location]"), json!("eastus"));
    assert_eq!(
        ev("[resourceGroup().id]"),
        json!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/palisade-rg")
    );
    assert_eq!(
        ev("[subscription().subscriptionId]"),
        json!("00000000-0000-0000-0000-000000000000")
    );
    assert_eq!(ev("[deployment().properties.templateLink.uri]"), json!(""));
    assert_eq!(ev("[deployment().name]"), json!("palisade-deployment"));
    assert_eq!(
        ev("[environment().suffixes.storage]"),
        json!("core.windows.net")
    );
    let u = ev("[uniqueString(resourceGroup().id)]");
    assert_eq!(u.as_str().map(str::len), Some(13));
    assert_eq!(u, ev("[uniqueString(resourceGroup().id)]"));
    let g = ev("[guid('a', 'b')]");
    assert_eq!(g.as_str().map(str::len), Some(36));
    assert_eq!(ev("[utcNow()]"), json!("20240101T000000Z"));
    assert_eq!(
        ev("[dateTimeAdd('2020-01-01T00:00:00Z', 'P1D')]"),
        json!("2020-01-01T00:00:00Z")
    );
}

#[test]
fn fmt_4_cidr_functions() {
    assert_eq!(
        ev("[parseCidr('10.144.0.0/20').broadcast]"),
        json!("10.144.15.255")
    );
    assert_eq!(
        ev("[cidrSubnet('10.144.0.0/20', 24, 3)]"),
        json!("10.144.3.0/24")
    );
    assert_eq!(ev("[cidrHost('10.144.3.0/24', 3)]"), json!("10.144.3.4"));
    assert!(fails("[cidrSubnet('10.144.0.0/20', 24, 99)]").contains("out of range"));
    assert!(fails("[parseCidr('x')]").contains("CIDR"));
}

#[test]
fn fmt_4_deployment_time_functions_are_unresolved() {
    let v = ev("[reference(resourceId('Microsoft.Network/publicIPAddresses', 'pip')).ipAddress]");
    assert_eq!(
        v["$unresolved"],
        json!("[reference(resourceId('Microsoft.Network/publicIPAddresses', 'pip')).ipAddress]")
    );
    assert!(
        palisade_arm::unresolved_why(&v).is_some_and(|w| w.starts_with("reference()")),
        "{v}"
    );
    assert!(is_unresolved(&ev(
        "[listKeys('x', '2020-01-01').keys[0].value]"
    )));
    assert!(is_unresolved(&ev("[concat('prefix-', reference('x').y)]")));
    assert!(is_unresolved(&ev("[providers('Microsoft.Network', 'x')]")));
    assert!(is_unresolved(&ev("[noSuchFunction(1)]")));
    assert!(is_unresolved(&ev("[contoso.helper('x')]")));
    assert!(is_unresolved(&ev("[length(createArray(reference('x')))]")));
}

#[test]
fn fmt_4_malformed_expressions_are_told_apart_from_invalid_ones() {
    match evaluate_standalone("[concat('a']") {
        Err(EvalError::Syntax { expression, error }) => {
            assert_eq!(expression, "[concat('a']");
            assert_eq!(
                error,
                SyntaxError::UnclosedCall {
                    name: "concat".into()
                }
            );
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert_eq!(
        fails("[concat('a']"),
        "[concat('a']: invalid expression: missing ')' to close the call of 'concat'"
    );
    assert!(matches!(
        evaluate_standalone("[parameters('p')]"),
        Err(EvalError::Invalid(_))
    ));
}

#[test]
fn fmt_4_scope_errors_in_standalone() {
    assert!(fails("[parameters('p')]").contains("not declared"));
    assert!(fails("[variables('v')]").contains("not defined"));
    assert!(fails("[copyIndex()]").contains("outside a copy loop"));
    assert!(fails("[copyIndex('x', 1, 2)]").contains("at most 2"));
}
