//! Does an IAM policy document allow one authorization (action, resource ARN, condition context)
//! that the emulator recorded for a request (scripts/kiln_emulator/authorization.py)?
//!
//! The parts of IAM's evaluation kiln's policies use: `Action` and `Resource` with `*` and `?`
//! wildcards (actions case-insensitive; an ARN's first five colon-separated parts each matched on
//! their own, the resource part as a whole), explicit `Deny` over `Allow`, and the condition
//! operators `StringEquals`, `StringLike`, `ArnEquals`, `ArnLike` and their `ForAllValues:` /
//! `ForAnyValue:` forms; condition key names are case-insensitive, values are not. It fails
//! closed: a statement with `NotAction`/`NotResource`, an operator not listed here, or a
//! condition key missing from the context never allows (IAM itself lets `ForAllValues:` match a
//! missing key; this evaluator is stricter).

use serde_json::{Map, Value};

/// Why a policy does not allow an authorization: what it needed and what was missing.
pub fn denial(policy: &Value, authorization: &Value) -> Option<String> {
    let action = authorization["action"].as_str().unwrap_or_default();
    let resource = authorization["resource"].as_str().unwrap_or_default();
    let empty = Map::new();
    let context = authorization["context"].as_object().unwrap_or(&empty);
    let statements: Vec<&Value> = match &policy["Statement"] {
        Value::Array(items) => items.iter().collect(),
        single @ Value::Object(_) => vec![single],
        _ => Vec::new(),
    };
    let mut near = Vec::new();
    let mut allowed = false;
    for statement in statements {
        if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
            continue;
        }
        let acts = strings(&statement["Action"])
            .iter()
            .any(|p| glob(&p.to_ascii_lowercase(), &action.to_ascii_lowercase()));
        let on = strings(&statement["Resource"])
            .iter()
            .any(|p| arn_matches(p, resource));
        if !acts || !on {
            continue;
        }
        let unmet = unmet_condition(&statement["Condition"], context);
        match (statement["Effect"].as_str(), unmet) {
            (Some("Deny"), None) => {
                return Some(format!(
                    "{action} on {resource} is denied by statement {}",
                    statement["Sid"]
                ))
            }
            (Some("Allow"), None) => allowed = true,
            (Some("Allow"), Some(why)) => near.push(format!("{} needs {why}", statement["Sid"])),
            _ => {}
        }
    }
    if allowed {
        return None;
    }
    Some(if near.is_empty() {
        format!("no statement allows {action} on {resource}")
    } else {
        format!("{action} on {resource}: {}", near.join("; "))
    })
}

/// A policy value as a list of strings (one string, or an array of them).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `*` any run of characters (none included), `?` any one character.
pub use kiln::aws::fake::glob;

/// An ARN pattern against an ARN: `*` alone matches anything; otherwise the first five parts
/// (arn, partition, service, region, account) one by one and the rest (the resource, which may
/// hold colons) as a whole.
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

/// The first condition of a statement the context does not meet, described; `None` when all hold.
fn unmet_condition(condition: &Value, context: &Map<String, Value>) -> Option<String> {
    let operators = match condition {
        Value::Null => return None,
        Value::Object(operators) => operators,
        other => return Some(format!("a Condition that is not an object: {other}")),
    };
    for (operator, keys) in operators {
        let Some(keys) = keys.as_object() else {
            return Some(format!("a condition {operator} that is not an object"));
        };
        for (key, wanted) in keys {
            let wanted = strings(wanted);
            let found = context
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| strings(v));
            let Some(found) = found else {
                return Some(format!(
                    "{operator} {key} {wanted:?}, a key the request does not have"
                ));
            };
            if !holds(operator, &wanted, &found) {
                return Some(format!("{operator} {key} {wanted:?}, found {found:?}"));
            }
        }
    }
    None
}

/// Whether the context's values for a key meet `operator` with the policy's values (any of
/// which may match one context value).
fn holds(operator: &str, wanted: &[String], found: &[String]) -> bool {
    let (set, base) = match operator.split_once(':') {
        Some((set, base)) => (Some(set), base),
        None => (None, operator),
    };
    let one = |value: &String| match base {
        "StringEquals" | "ArnEquals" => wanted.iter().any(|w| w == value),
        "StringLike" => wanted.iter().any(|w| glob(w, value)),
        _ => wanted.iter().any(|w| arn_matches(w, value)), // ArnLike
    };
    if !["StringEquals", "StringLike", "ArnEquals", "ArnLike"].contains(&base) {
        return false; // an operator this evaluator does not know
    }
    let results: Vec<bool> = found.iter().map(one).collect();
    match set {
        Some("ForAllValues") => results.iter().all(|r| *r),
        Some("ForAnyValue") => results.iter().any(|r| *r),
        // A single-valued operator holds for a context with exactly one value that matches.
        None => results.len() == 1 && results[0],
        Some(_) => false,
    }
}
