//! The recipe's JSON Schema (`kiln schema`, shipped as `schema/recipe.schema.json`), built from
//! the field lists the loader itself reads with ([`super::fragment`], [`super::step`]), so the
//! two cannot drift: a field the loader accepts is in the schema, and an unknown field fails
//! both. The schema gives editors completion and structure checks (which sections are
//! mappings or lists, which fields they take); the value rules (AMI ids, durations, templates)
//! stay with `kiln validate`.

use serde_json::{json, Map, Value};

use super::fragment::{
    BUILDER_FIELDS, FILTER_FIELDS, IMAGE_FIELDS, REFRESH_FIELDS, REGION_FIELDS, RELEASE_FIELDS,
    SOURCE_FIELDS, TESTER_FIELDS, TIMEOUT_FIELDS, TOP_LEVEL_FIELDS, VAR_FIELDS,
};
use super::step::{CHECK_FIELDS, FILE_FIELDS, STEP_FIELDS};

/// A scalar: YAML writes strings, numbers and booleans alike.
fn scalar() -> Value {
    json!({ "type": ["string", "number", "boolean", "null"] })
}

/// A mapping that takes exactly `fields`; `nested` gives the schema of some of them.
fn mapping(fields: &[&str], nested: Value) -> Value {
    let mut nested = match nested {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let properties: Map<String, Value> = fields
        .iter()
        .map(|field| {
            (
                field.to_string(),
                nested.remove(*field).unwrap_or_else(scalar),
            )
        })
        .collect();
    json!({ "type": "object", "properties": properties, "additionalProperties": false })
}

fn list_of(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// The schema of a recipe file (the root or an included fragment).
pub fn recipe_schema() -> Value {
    let step = mapping(
        &STEP_FIELDS,
        json!({ "file": mapping(FILE_FIELDS, json!({})), "check": mapping(CHECK_FIELDS, json!({})) }),
    );
    let region = json!({ "anyOf": [scalar(), mapping(REGION_FIELDS, json!({}))] });
    let image = mapping(
        IMAGE_FIELDS,
        json!({
            "tags": { "type": "object", "additionalProperties": scalar() },
            "regions": list_of(region),
            "share_with": list_of(scalar()),
        }),
    );
    let var = json!({ "anyOf": [scalar(), mapping(VAR_FIELDS, json!({}))] });
    let nested = json!({
        "include": list_of(scalar()),
        "vars": { "type": "object", "additionalProperties": var },
        "source": mapping(SOURCE_FIELDS, json!({ "filter": mapping(FILTER_FIELDS, json!({ "owners": list_of(scalar()) })) })),
        "builder": mapping(BUILDER_FIELDS, json!({ "security_group_ids": list_of(scalar()) })),
        "steps": list_of(step.clone()),
        "test": list_of(step),
        "tester": mapping(TESTER_FIELDS, json!({})),
        "image": image,
        "release": mapping(RELEASE_FIELDS, json!({ "refresh": mapping(REFRESH_FIELDS, json!({ "alarms": list_of(scalar()) })) })),
        "timeouts": mapping(TIMEOUT_FIELDS, json!({})),
    });
    let mut schema = mapping(TOP_LEVEL_FIELDS, nested);
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema["title"] = json!("kiln recipe");
    schema["description"] = json!(
        "A kiln recipe or included fragment: sections and fields as `kiln validate` reads them; `kiln validate` also checks the values."
    );
    schema
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use marked_yaml::Node;
    use serde_json::Value;

    use super::recipe_schema;

    /// The subset of JSON Schema the recipe schema uses: `type`, `properties`,
    /// `additionalProperties`, `items`, `anyOf`. Returns the first violation's path.
    fn violation(schema: &Value, node: &Node, path: &str) -> Option<String> {
        if let Some(options) = schema["anyOf"].as_array() {
            return options
                .iter()
                .all(|option| violation(option, node, path).is_some())
                .then(|| format!("{path}: matches none of the allowed forms"));
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        match node {
            Node::Scalar(_) => (!types
                .iter()
                .any(|t| ["string", "number", "boolean", "null"].contains(t)))
            .then(|| format!("{path}: a scalar where {types:?} is expected")),
            Node::Sequence(items) => {
                if !types.contains(&"array") {
                    return Some(format!("{path}: a list where {types:?} is expected"));
                }
                items.iter().enumerate().find_map(|(i, item)| {
                    violation(&schema["items"], item, &format!("{path}[{i}]"))
                })
            }
            Node::Mapping(map) => {
                if !types.contains(&"object") {
                    return Some(format!("{path}: a mapping where {types:?} is expected"));
                }
                map.iter().find_map(|(key, value)| {
                    let key = key.as_str();
                    let field = format!("{path}.{key}");
                    match schema["properties"].get(key) {
                        Some(property) => violation(property, value, &field),
                        None => match &schema["additionalProperties"] {
                            Value::Bool(false) => Some(format!("{field}: not allowed")),
                            Value::Object(_) => {
                                violation(&schema["additionalProperties"], value, &field)
                            }
                            _ => None,
                        },
                    }
                })
            }
        }
    }

    fn check(path: &Path) -> Option<String> {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let node =
            marked_yaml::parse_yaml(0, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        violation(&recipe_schema(), &node, "")
    }

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Every `.yaml` under `dir`, recursively.
    fn yaml_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(yaml_files(&path));
            } else if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
        found
    }

    #[test]
    fn every_good_recipe_and_fragment_matches_the_schema() {
        let mut files = yaml_files(&repo().join("recipes"));
        files.extend(yaml_files(&repo().join("tests/recipes/good")));
        assert!(files.len() >= 6, "{files:?}");
        for file in files {
            assert_eq!(check(&file), None, "{}", file.display());
        }
    }

    /// The bad recipes that fail for a schema reason (an unknown field, a mapping where a list
    /// belongs...) fail the schema too.
    #[test]
    fn bad_recipes_that_fail_for_a_schema_reason_fail_the_schema() {
        let mut checked = 0;
        for expect in std::fs::read_dir(repo().join("tests/recipes/bad"))
            .unwrap()
            .flatten()
        {
            let expect = expect.path();
            if expect.extension().is_none_or(|e| e != "expect") {
                continue;
            }
            let first = std::fs::read_to_string(&expect).unwrap();
            let first = first.lines().next().unwrap_or_default();
            let recipe = expect.with_extension("yaml");
            if !first.contains("unknown field") || !recipe.exists() {
                continue;
            }
            assert!(
                check(&recipe).is_some(),
                "{} passes the schema",
                recipe.display()
            );
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} schema cases");
    }

    #[test]
    fn the_shipped_schema_is_the_generated_one() {
        let shipped = std::fs::read_to_string(repo().join("schema/recipe.schema.json")).unwrap();
        let generated = serde_json::to_string_pretty(&recipe_schema()).unwrap() + "\n";
        assert_eq!(
            shipped, generated,
            "run `kiln schema > schema/recipe.schema.json`"
        );
    }
}
