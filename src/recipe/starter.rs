//! `kiln init NAME`: a starter recipe that validates as written. It bakes a small web page onto
//! the newest Amazon Linux 2023: one run step (installs and enables nginx), one file step (the
//! page) and one check step (nginx serves it), and releases the image to launch template `NAME`.
//! Its first line is the YAML language server's modeline, naming the recipe schema that `kiln
//! init` writes next to it ([`SCHEMA_FILE_NAME`]): editors complete and check the recipe as it is
//! written.

use std::path::PathBuf;

use super::checks;
use super::schema::{render, SchemaKind, SCHEMA_FILE_NAME};

/// The files of the starter recipe `name` (the recipe, its page, the recipe schema), relative to
/// the folder they are written to; or why `name` cannot be a recipe name.
pub fn starter(name: &str) -> Result<Vec<(PathBuf, String)>, String> {
    checks::recipe_name(name).map_err(|problem| format!("`{name}` {problem}"))?;
    let recipe = format!(
        r#"# yaml-language-server: $schema={SCHEMA_FILE_NAME}
# A starter recipe: `kiln validate {name}.yaml`, then `kiln build {name}.yaml`.
name: {name}
version: "0.1.0"
vars:
  greeting: "hello from {name}"
source:
  filter: {{ name: "al2023-ami-2023.*-x86_64", owners: ["amazon"], architecture: x86_64 }}
builder:
  instance_type: t3.micro
  iam_instance_profile: kiln-builder   # a role with AmazonSSMManagedInstanceCore
steps:
  - name: install nginx
    run: |
      set -euo pipefail
      dnf install -y nginx
      systemctl enable --now nginx
  - name: home page
    file: {{ source: files/index.html, destination: /usr/share/nginx/html/index.html, mode: "0644", template: true }}
  - name: nginx serves the page
    check: {{ url: "http://127.0.0.1/", expect_status: 200, expect_body: "{{{{ vars.greeting }}}}", timeout: 2m }}
release:
  launch_template: {name}
  keep: 5
"#
    );
    let page =
        "<!doctype html>\n<title>{{ name }} {{ version }}</title>\n<p>{{ vars.greeting }}</p>\n";
    Ok(vec![
        (PathBuf::from(format!("{name}.yaml")), recipe),
        (PathBuf::from("files/index.html"), page.to_owned()),
        (PathBuf::from(SCHEMA_FILE_NAME), render(SchemaKind::Recipe)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StepKind;
    use crate::recipe::{load_plan, LoadOptions};

    #[test]
    fn the_starter_recipe_validates_as_written() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in starter("my-app").unwrap() {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let plan = load_plan(
            &dir.path().join("my-app.yaml"),
            &LoadOptions::without_build(Vec::new()),
        )
        .unwrap_or_else(|problems| panic!("{problems:?}"));
        let kinds: Vec<&str> = plan
            .steps
            .iter()
            .map(|s| s.kind.keyword().keyword())
            .collect();
        assert_eq!(kinds, ["run", "file", "check"]);
        assert!(
            matches!(&plan.steps[1].kind, StepKind::File { content, .. } if String::from_utf8_lossy(content).contains("hello from my-app"))
        );
        assert_eq!(plan.release.unwrap().launch_template, "my-app");
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let files = starter("my-app").unwrap();
        assert!(files[0]
            .1
            .starts_with("# yaml-language-server: $schema=recipe.schema.json\n"));
        assert_eq!(files[2].0, PathBuf::from("recipe.schema.json"));
        assert!(starter("My_App")
            .unwrap_err()
            .contains("not a valid recipe name"));
    }
}
