//! AWS pages Describe answers: launch template versions and launch templates arrive a page at a
//! time with a NextToken. The emulator pages as AWS does (here 2 items a page), so history and
//! prune must follow every token to see what the later pages hold.

use serde_json::json;

use crate::lifecycle::{app_recipe, build_versions, prune};
use crate::support::*;

fn paged_emulator() -> Emulator {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"page_size": 2}));
    emulator
}

#[test]
fn history_lists_versions_from_every_page() {
    let emulator = paged_emulator();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let ids = build_versions(&kiln, &recipe, 4);
    let (_, latest) = aws.template_versions("rudder-dataplane");
    let history = kiln.run(&["history", &recipe, "--json"]);
    history.assert_code(0);
    let history = history.json();
    let versions = history["versions"].as_array().unwrap();
    // The seeded version and one per build: three pages of two.
    assert_eq!(versions.len() as i64, latest, "{history}");
    assert_eq!(versions[0]["image_id"], json!(ids[3]));
    assert_eq!(versions[3]["image_id"], json!(ids[0]));
}

#[test]
fn prune_protects_what_later_pages_reference() {
    let emulator = paged_emulator();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let ids = build_versions(&kiln, &recipe, 4);
    // The newest version (third page) points at the oldest image; the default goes back to
    // the version of the newest image.
    let (default_version, _) = aws.template_versions("rudder-dataplane");
    kiln.run(&["rollback", &recipe, "--image", &ids[0]])
        .assert_code(0);
    kiln.run(&["rollback", &recipe, "--to", &default_version.to_string()])
        .assert_code(0);
    // Two more templates: the seeded one and "aaa-first" fill the first page, the one using
    // ids[1] is on the second.
    for (name, image) in [("aaa-first", &ids[3]), ("zzz-last", &ids[1])] {
        aws.block_on(
            aws.ec2
                .create_launch_template()
                .launch_template_name(name)
                .launch_template_data(
                    aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                        .image_id(image)
                        .build(),
                )
                .send(),
        )
        .expect("create a template");
    }
    let (report, deleted) = prune(&kiln, &recipe, 1);
    assert_eq!(deleted, vec![ids[2].clone()], "{report}");
    let text = report.to_string();
    assert!(text.contains("the latest version"), "{text}");
    assert!(text.contains("used by launch template zzz-last"), "{text}");
}
