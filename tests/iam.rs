//! `kiln iam-policy`: the policy it prints must allow every AWS action kiln called during the
//! whole test suite. Each emulator writes the actions kiln called when it stops; this test runs
//! after the suite (scripts/test.sh runs it with `--ignored`).

use std::collections::BTreeSet;

use crate::support::*;

fn policy_actions() -> BTreeSet<String> {
    let kiln = Kiln::offline();
    let recipe = repo_root().join("tests/recipes/full-featured.yaml");
    let run = kiln.run(&["iam-policy", recipe.to_str().unwrap()]);
    run.assert_code(0);
    let policy = run.json();
    assert_eq!(policy["Version"], serde_json::json!("2012-10-17"));
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_policy_names_only_real_actions_of_the_three_services() {
    for action in policy_actions() {
        let (service, name) = action.split_once(':').expect("service:Action");
        assert!(
            ["ec2", "ssm", "autoscaling", "iam"].contains(&service),
            "{action}"
        );
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            "{action}"
        );
    }
}

#[test]
#[ignore = "runs after the suite: scripts/test.sh"]
fn policy_allows_every_action_the_suite_recorded() {
    let allowed = policy_actions();
    let dir = recorded_actions_dir();
    let mut recorded = BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run the suite first)", dir.display()))
        .flatten()
    {
        recorded.extend(read(&entry.path()).lines().map(str::to_owned));
    }
    assert!(
        recorded.len() >= 20,
        "only {} actions recorded: {recorded:?}",
        recorded.len()
    );
    let missing: Vec<&String> = recorded.iter().filter(|a| !allowed.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "kiln called actions its policy does not allow: {missing:?}"
    );
}
