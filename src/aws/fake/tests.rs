use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::ec2::glob;
use super::*;
use crate::aws::model::*;
use crate::aws::Cloud;

const REGION: &str = "eu-west-1";

fn launch(image_id: &str, token: &str) -> LaunchRequest {
    LaunchRequest {
        image_id: image_id.to_owned(),
        instance_type: "t3.small".into(),
        iam_instance_profile: Some("kiln-builder".into()),
        subnet_id: None,
        security_group_ids: Vec::new(),
        root_volume: None,
        imdsv2_required: true,
        associate_public_ip: None,
        client_token: token.to_owned(),
        tags: vec![("kiln:build-id".into(), token.to_owned())],
        volume_tags: Vec::new(),
        launch_template: None,
    }
}

fn image_request(instance_id: &str, name: &str) -> CreateImageRequest {
    CreateImageRequest {
        instance_id: instance_id.to_owned(),
        name: name.to_owned(),
        description: None,
        tags: vec![("kiln:build-id".into(), "b1".into())],
    }
}

fn shell(instance_id: &str, script: &str, timeout_secs: u64) -> ShellCommand {
    ShellCommand {
        instance_id: instance_id.to_owned(),
        script: script.to_owned(),
        execution_timeout_secs: timeout_secs,
        comment: "test".into(),
    }
}

/// The seeded template's image: the newest Amazon Linux x86_64 image.
fn seeded_image(fake: &Fake) -> String {
    let template = fake.template(SEED_NAME).expect("seeded template");
    template.versions[0].image_id.clone().expect("image")
}

async fn state_of(fake: &Fake, id: &str) -> InstanceState {
    fake.instance(id).await.unwrap().expect("instance").state
}

/// A stopped instance of the seeded image, ready to be imaged.
async fn stopped_builder(fake: &Fake, token: &str) -> String {
    let id = fake
        .launch_instance(&launch(&seeded_image(fake), token))
        .await
        .unwrap();
    sleep(fake.timings().instance_start).await;
    fake.stop_instance(&id).await.unwrap();
    sleep(fake.timings().instance_stop).await;
    id
}

/// A stopped builder (launch token `b1`) and the image `app-1` created from it.
async fn builder_and_image(fake: &Fake) -> (String, String) {
    let builder = stopped_builder(fake, "b1").await;
    let image_id = fake
        .create_image(&image_request(&builder, "app-1"))
        .await
        .unwrap();
    (builder, image_id)
}

#[test]
fn globs_match_like_ec2_filters() {
    assert!(glob(
        "al2023-ami-2023.*-x86_64",
        "al2023-ami-2023.6.2-kernel-6.1-x86_64"
    ));
    assert!(glob("a?c*", "abcdef"));
    assert!(glob("*", ""));
    assert!(!glob("al2023-*-arm64", "al2023-ami-x86_64"));
    assert!(!glob("abc", "abcd"));
}

#[test]
fn faults_of_one_operation_are_used_in_order() {
    let mut faults = world::Faults::default();
    faults.push("RunInstances", None, Fault::fail("A", 2));
    faults.push("RunInstances", Some("us-east-1"), Fault::Hang);
    faults.push("CreateImage", None, Fault::Delay(Duration::from_secs(1)));
    let code = |f: Option<Fault>| match f {
        Some(Fault::Fail { code, .. }) => code,
        other => format!("{other:?}"),
    };
    assert_eq!(code(faults.take("RunInstances", REGION)), "A");
    assert_eq!(code(faults.take("RunInstances", REGION)), "A");
    assert_eq!(faults.take("RunInstances", REGION), None);
    assert_eq!(faults.take("RunInstances", "us-east-1"), Some(Fault::Hang));
    assert_eq!(
        faults.take("CreateImage", REGION),
        Some(Fault::Delay(Duration::from_secs(1)))
    );
}

#[tokio::test(start_paused = true)]
async fn the_seed_is_the_emulators_demo_world() {
    let fake = Fake::seeded(REGION);
    let amazon = ImageQuery {
        owners: vec!["amazon".into()],
        architecture: Some("x86_64".into()),
        ..ImageQuery::default()
    }
    .named("al2023-ami-2023.*-x86_64");
    let images = fake.find_images(&amazon).await.unwrap();
    assert_eq!(images.len(), 2);
    let newest = images.iter().max_by_key(|i| &i.creation_date).unwrap();
    assert_eq!(newest.id, seeded_image(&fake));
    assert_eq!(newest.owner_id, AMAZON_OWNER_ID);
    assert_eq!(newest.root_device_name.as_deref(), Some("/dev/xvda"));
    assert_eq!(newest.snapshot_ids.len(), 1);
    let template = fake.template(SEED_NAME).unwrap();
    assert_eq!((template.default_version, template.latest_version), (1, 1));
    let own = fake.find_images(&ImageQuery::own()).await.unwrap();
    assert!(own.is_empty());
    fake.seed();
    assert_eq!(fake.all_images().len(), 3);
    assert_eq!(fake.launch_templates().await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn instances_change_state_with_virtual_time() {
    let fake = Fake::seeded(REGION);
    let started = Instant::now();
    let id = fake
        .launch_instance(&launch(&seeded_image(&fake), "t1"))
        .await
        .unwrap();
    assert_eq!(state_of(&fake, &id).await, InstanceState::Pending);
    sleep(Duration::from_millis(1999)).await;
    assert_eq!(state_of(&fake, &id).await, InstanceState::Pending);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(state_of(&fake, &id).await, InstanceState::Running);

    fake.stop_instance(&id).await.unwrap();
    assert_eq!(state_of(&fake, &id).await, InstanceState::Stopping);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(state_of(&fake, &id).await, InstanceState::Stopped);

    fake.terminate_instance(&id).await.unwrap();
    assert_eq!(state_of(&fake, &id).await, InstanceState::ShuttingDown);
    sleep(Duration::from_secs(2)).await;
    let gone = fake.instance(&id).await.unwrap().unwrap();
    assert_eq!(gone.state, InstanceState::Terminated);
    assert!(!gone.state_reason.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(6));

    fake.terminate_instance(&id).await.unwrap();
    // As AWS: an unknown id is NotFound (the pipeline decides whether that means gone).
    let err = fake
        .terminate_instance("i-00000000000000bad")
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidInstanceID.NotFound"));
    assert_eq!(fake.instance("i-00000000000000bad").await.unwrap(), None);
    let live = fake.find_instances(&InstanceQuery::live()).await.unwrap();
    assert!(live.is_empty());
    let query = InstanceQuery::default().tagged("kiln:build-id", "t1");
    assert_eq!(fake.find_instances(&query).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_token_launches_once() {
    let fake = Fake::seeded(REGION);
    let image = seeded_image(&fake);
    let first = fake
        .launch_instance(&launch(&image, "token-1"))
        .await
        .unwrap();
    let again = fake
        .launch_instance(&launch(&image, "token-1"))
        .await
        .unwrap();
    let other = fake
        .launch_instance(&launch(&image, "token-2"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_eq!(fake.instances().len(), 2);

    let err = fake
        .launch_instance(&launch("ami-00000000000000404", "token-3"))
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidAMIID.NotFound"));
}

#[tokio::test(start_paused = true)]
async fn images_are_pending_then_available_and_names_are_unique() {
    let fake = Fake::seeded(REGION);
    let (builder, image_id) = builder_and_image(&fake).await;
    let image = fake
        .images(std::slice::from_ref(&image_id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(image.state, ImageState::Pending);
    assert_eq!(image.owner_id, ACCOUNT_ID);
    assert_eq!(
        image.tags.get("kiln:build-id").map(String::as_str),
        Some("b1")
    );
    let snapshots = fake.snapshots_of_image(&image_id).await.unwrap();
    assert_eq!(snapshots, image.snapshot_ids);
    let snapshot = fake
        .snapshots()
        .into_iter()
        .find(|s| s.id == snapshots[0])
        .unwrap();
    assert_eq!(
        snapshot.description,
        format!("Created by CreateImage({builder}) for {image_id}")
    );

    let err = fake
        .create_image(&image_request(&builder, "app-1"))
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidAMIName.Duplicate"));

    sleep(fake.timings().image_available).await;
    let available = ImageQuery::own()
        .in_state(ImageState::Available)
        .named("app-*");
    assert_eq!(fake.find_images(&available).await.unwrap().len(), 1);

    fake.deregister_image(&image_id).await.unwrap();
    let err = fake.deregister_image(&image_id).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidAMIID.NotFound"));
    assert!(fake.images(&[image_id]).await.unwrap().is_empty());
    assert!(fake
        .create_image(&image_request(&builder, "app-1"))
        .await
        .is_ok());

    let err = fake
        .create_image(&image_request("i-00000000000000404", "app-2"))
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidInstanceID.NotFound"));
}

#[tokio::test(start_paused = true)]
async fn images_can_be_scripted_to_fail() {
    let fake = Fake::seeded(REGION);
    fake.image_outcome(ImageOutcome::Failed {
        reason: "Server.InternalError".into(),
    });
    let (_, image_id) = builder_and_image(&fake).await;
    sleep(fake.timings().image_available).await;
    let image = fake.images(&[image_id]).await.unwrap().remove(0);
    assert_eq!(image.state, ImageState::Failed);
    assert_eq!(image.state_reason, "Server.InternalError");
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_is_in_use_while_its_image_is_registered() {
    let fake = Fake::seeded(REGION);
    let (_, image_id) = builder_and_image(&fake).await;
    let snapshot = fake.snapshots_of_image(&image_id).await.unwrap().remove(0);
    let err = fake.delete_snapshot(&snapshot).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidSnapshot.InUse"));

    fake.deregister_image(&image_id).await.unwrap();
    assert_eq!(
        fake.snapshots_of_image(&image_id).await.unwrap(),
        vec![snapshot.clone()]
    );
    // As on AWS, a just-deregistered image holds its snapshot for a while.
    let err = fake.delete_snapshot(&snapshot).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidSnapshot.InUse"));
    sleep(fake.timings().snapshot_release).await;
    fake.delete_snapshot(&snapshot).await.unwrap();
    let err = fake.delete_snapshot(&snapshot).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidSnapshot.NotFound"));
    assert!(fake.snapshots_of_image(&image_id).await.unwrap().is_empty());
    let states: Vec<ImageState> = fake.all_images().into_iter().map(|i| i.state).collect();
    assert!(states.contains(&ImageState::Deregistered));
}

#[tokio::test(start_paused = true)]
async fn copies_go_to_the_handles_region_once_per_token() {
    let home = Fake::seeded(REGION);
    let away = home.in_region("us-east-1");
    let builder = stopped_builder(&home, "b1").await;
    let image_id = home
        .create_image(&image_request(&builder, "app-1"))
        .await
        .unwrap();
    let request = CopyImageRequest {
        source_region: REGION.into(),
        source_image_id: image_id.clone(),
        name: "app-1".into(),
        description: None,
        client_token: "b1-us-east-1".into(),
        encrypted: false,
        kms_key_id: None,
        tags: vec![("kiln:build-id".into(), "b1".into())],
    };
    let copy = away.copy_image(&request).await.unwrap();
    assert_eq!(away.copy_image(&request).await.unwrap(), copy);
    assert_eq!(away.all_images().len(), 1);
    // Tagged in the call: the copy and its snapshot, before the copy is available.
    assert_eq!(away.all_images()[0].tags["kiln:build-id"], "b1");
    assert_eq!(away.snapshots()[0].tags["kiln:build-id"], "b1");
    assert!(home
        .images(std::slice::from_ref(&copy))
        .await
        .unwrap()
        .is_empty());
    let snapshots = away.snapshots_of_image(&copy).await.unwrap();
    assert_eq!(snapshots.len(), 1);
    sleep(home.timings().image_available).await;
    let copied = away.images(&[copy]).await.unwrap().remove(0);
    assert_eq!(copied.state, ImageState::Available);
    assert_eq!(Cloud::in_region(&home, "us-east-1").region(), "us-east-1");
}

#[tokio::test(start_paused = true)]
async fn tags_sharing_and_parameters() {
    let fake = Fake::seeded(REGION);
    let image = fake.add_image("mine", &[("team", "a")]);
    let snapshot = fake.images(std::slice::from_ref(&image)).await.unwrap()[0]
        .snapshot_ids
        .clone();
    let tags = vec![("k".to_owned(), "v".to_owned())];
    fake.create_tags(&[image.clone(), snapshot[0].clone()], &tags)
        .await
        .unwrap();
    let tagged = ImageQuery::own().tagged("k", "v").with_tag_key("team");
    assert_eq!(fake.find_images(&tagged).await.unwrap().len(), 1);
    for (id, code) in [
        ("i-00000000000000404", "InvalidInstanceID.NotFound"),
        ("ami-00000000000000404", "InvalidAMIID.NotFound"),
        ("snap-00000000000000404", "InvalidSnapshot.NotFound"),
    ] {
        let err = fake.create_tags(&[id.to_owned()], &tags).await.unwrap_err();
        assert_eq!(err.aws_code(), Some(code));
    }

    fake.share_image(&image, &snapshot, &["111122223333".into()])
        .await
        .unwrap();
    assert_eq!(fake.launch_permissions(&image), vec!["111122223333"]);

    assert_eq!(
        fake.put_parameter("/app/ami", "ami-1", "d").await.unwrap(),
        1
    );
    assert_eq!(
        fake.put_parameter("/app/ami", "ami-2", "d").await.unwrap(),
        2
    );
    assert_eq!(fake.parameter("/app/ami"), Some((2, "ami-2".to_owned())));
}

#[tokio::test(start_paused = true)]
async fn scripted_failures_answer_then_stop() {
    let fake = Fake::seeded(REGION);
    fake.fault("DescribeImages", Fault::fail("RequestLimitExceeded", 2));
    for _ in 0..2 {
        let err = fake.find_images(&ImageQuery::own()).await.unwrap_err();
        assert_eq!(err.aws_code(), Some("RequestLimitExceeded"));
        assert!(err.is_transient());
    }
    assert!(fake.find_images(&ImageQuery::own()).await.is_ok());
    assert_eq!(fake.count("DescribeImages"), 3);
    let call = &fake.calls()[0];
    assert_eq!(
        (call.operation, call.region.as_str()),
        ("DescribeImages", REGION)
    );
    fake.clear_calls();
    assert!(fake.calls().is_empty());

    fake.fault_in_region(
        "us-east-1",
        "DescribeImages",
        Fault::fail("InternalError", 1),
    );
    assert!(fake.find_images(&ImageQuery::own()).await.is_ok());
    let away = fake.in_region("us-east-1");
    assert!(away.find_images(&ImageQuery::own()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_acts_and_a_retry_finds_the_result() {
    let fake = Fake::seeded(REGION);
    fake.fault("RunInstances", Fault::lose_answer("RequestTimeout"));
    let request = launch(&seeded_image(&fake), "b1");
    let err = fake.launch_instance(&request).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("RequestTimeout"));
    assert_eq!(fake.instances().len(), 1);
    let id = fake.launch_instance(&request).await.unwrap();
    assert_eq!(fake.instances()[0].id, id);

    sleep(Duration::from_secs(2)).await;
    fake.stop_instance(&id).await.unwrap();
    sleep(Duration::from_secs(2)).await;
    fake.fault("CreateImage", Fault::lose_answer("RequestTimeout"));
    assert!(fake
        .create_image(&image_request(&id, "app-1"))
        .await
        .is_err());
    let retry = fake
        .create_image(&image_request(&id, "app-1"))
        .await
        .unwrap_err();
    assert_eq!(retry.aws_code(), Some("InvalidAMIName.Duplicate"));
    assert_eq!(fake.find_images(&ImageQuery::own()).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn delays_take_virtual_time_and_hangs_never_answer() {
    let fake = Fake::seeded(REGION);
    fake.fault(
        "DescribeLaunchTemplates",
        Fault::Delay(Duration::from_secs(30)),
    );
    let started = Instant::now();
    let template = TemplateRef::Name(SEED_NAME.into());
    let interrupted = tokio::select! {
        _ = fake.launch_template(&template) => false,
        _ = sleep(Duration::from_secs(10)) => true,
    };
    assert!(interrupted);
    assert_eq!(fake.count("DescribeLaunchTemplates"), 1);

    fake.fault(
        "DescribeLaunchTemplates",
        Fault::Delay(Duration::from_secs(30)),
    );
    fake.launch_template(&template).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(40));

    fake.fault("DescribeLaunchTemplates", Fault::Hang);
    let hung = tokio::time::timeout(Duration::from_secs(3600), fake.launch_template(&template));
    assert!(hung.await.is_err());
    assert!(fake.launch_template(&template).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_agent_comes_online_after_the_instance_runs() {
    let fake = Fake::seeded(REGION);
    let image = seeded_image(&fake);
    let id = fake.launch_instance(&launch(&image, "b1")).await.unwrap();
    let mut no_profile = launch(&image, "b2");
    no_profile.iam_instance_profile = None;
    let bare = fake.launch_instance(&no_profile).await.unwrap();
    sleep(Duration::from_millis(4999)).await;
    assert_eq!(fake.agent_status(&id).await.unwrap(), None);
    let err = fake
        .send_command(&shell(&id, "true", 60))
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidInstanceId"));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(
        fake.agent_status(&id).await.unwrap(),
        Some(PingStatus::Online)
    );
    assert_eq!(fake.agent_status(&bare).await.unwrap(), None);

    fake.stop_instance(&id).await.unwrap();
    let lost = fake.agent_status(&id).await.unwrap();
    assert_eq!(lost, Some(PingStatus::ConnectionLost));
}

/// A builder whose agent is online.
async fn online_builder(fake: &Fake) -> String {
    let id = fake
        .launch_instance(&launch(&seeded_image(fake), "b1"))
        .await
        .unwrap();
    let timings = fake.timings();
    sleep(timings.instance_start + timings.agent_online).await;
    id
}

#[tokio::test(start_paused = true)]
async fn commands_follow_the_first_matching_rule() {
    let fake = Fake::seeded(REGION);
    fake.command_rule(CommandRule {
        matching: "make install".into(),
        in_progress_for: Duration::from_secs(10),
        outcome: CommandOutcome::Failed {
            exit_code: 2,
            stdout: "building".into(),
            stderr: "no rule to make target".into(),
        },
    });
    fake.command_rule(CommandRule {
        matching: "make".into(),
        in_progress_for: Duration::from_secs(1),
        outcome: CommandOutcome::Success {
            stdout: "ok".into(),
        },
    });
    let id = online_builder(&fake).await;
    let failing = fake
        .send_command(&shell(&id, "cd /src && make install", 60))
        .await
        .unwrap();
    let passing = fake.send_command(&shell(&id, "make", 60)).await.unwrap();
    let now = fake.invocation(&failing, &id).await.unwrap().unwrap();
    assert_eq!(
        (now.status, now.exit_code),
        (CommandStatus::InProgress, None)
    );

    sleep(Duration::from_secs(1)).await;
    let ok = fake.invocation(&passing, &id).await.unwrap().unwrap();
    assert_eq!(
        (ok.status, ok.exit_code, ok.stdout.as_str()),
        (CommandStatus::Success, Some(0), "ok")
    );

    sleep(Duration::from_secs(9)).await;
    let failed = fake.invocation(&failing, &id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status.clone(), failed.exit_code),
        (CommandStatus::Failed, Some(2))
    );
    assert_eq!(failed.stderr, "no rule to make target");
    assert!(failed.is_finished());
    assert_eq!(fake.sent_commands()[0].1, "cd /src && make install");
}

#[tokio::test(start_paused = true)]
async fn commands_without_a_rule_succeed_quietly() {
    let fake = Fake::seeded(REGION);
    let id = online_builder(&fake).await;
    let plain = fake.send_command(&shell(&id, "echo hi", 60)).await.unwrap();
    let running = fake.invocation(&plain, &id).await.unwrap().unwrap();
    assert_eq!(running.status, CommandStatus::InProgress);
    sleep(DEFAULT_COMMAND_TIME).await;
    let done = fake.invocation(&plain, &id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.exit_code),
        (CommandStatus::Success, Some(0))
    );
    assert_eq!((done.stdout.as_str(), done.stderr.as_str()), ("", ""));
    let elsewhere = fake.invocation(&plain, "i-00000000000000404").await;
    assert_eq!(elsewhere.unwrap(), None);
    assert_eq!(fake.invocation("nope", &id).await.unwrap(), None);
    assert_eq!(fake.sent_commands(), vec![(id, "echo hi".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn commands_time_out_and_can_be_cancelled() {
    let fake = Fake::seeded(REGION);
    fake.command_rule(CommandRule {
        matching: "sleep".into(),
        in_progress_for: Duration::from_secs(600),
        outcome: CommandOutcome::Success {
            stdout: String::new(),
        },
    });
    let id = online_builder(&fake).await;
    let slow = fake
        .send_command(&shell(&id, "sleep 600", 30))
        .await
        .unwrap();
    let cancelled = fake
        .send_command(&shell(&id, "sleep 600", 900))
        .await
        .unwrap();
    sleep(Duration::from_secs(30)).await;
    let timed_out = fake.invocation(&slow, &id).await.unwrap().unwrap();
    assert_eq!(timed_out.status, CommandStatus::TimedOut);
    assert_eq!(timed_out.describe_status(), "TimedOut (ExecutionTimedOut)");

    fake.cancel_command(&cancelled, &id).await.unwrap();
    let after = fake.invocation(&cancelled, &id).await.unwrap().unwrap();
    assert_eq!(after.status, CommandStatus::Cancelled);
    let err = fake.cancel_command("nope", &id).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidCommandId"));
}

#[tokio::test(start_paused = true)]
async fn template_versions_copy_the_source_and_keep_the_default() {
    let fake = Fake::seeded(REGION);
    let by_name = TemplateRef::Name(SEED_NAME.into());
    let template = fake.launch_template(&by_name).await.unwrap();
    let by_id = TemplateRef::Id(template.id.clone());
    assert_eq!(fake.launch_template(&by_id).await.unwrap(), template);
    let image = fake.add_image("app-1", &[]);
    let request = NewTemplateVersion {
        template_id: template.id.clone(),
        source_version: 1,
        image_id: image.clone(),
        description: "kiln build b1".into(),
        client_token: "b1".into(),
    };
    assert_eq!(fake.create_template_version(&request).await.unwrap(), 2);
    assert_eq!(fake.create_template_version(&request).await.unwrap(), 2);
    let versions = fake.template_versions(&template.id).await.unwrap();
    let numbers: Vec<i64> = versions.iter().map(|v| v.number).collect();
    assert_eq!(numbers, vec![2, 1]);
    assert_eq!(versions[0].image_id.as_deref(), Some(image.as_str()));
    assert!(versions[1].is_default && !versions[0].is_default);
    let data = fake.template_data(SEED_NAME, 2).unwrap();
    assert_eq!(
        data.get("InstanceType").map(String::as_str),
        Some("t3.large")
    );

    fake.set_default_version(&template.id, 2).await.unwrap();
    let default = fake.default_template_version(&by_name).await.unwrap();
    assert_eq!((default.number, default.image_id), (2, Some(image)));
    let err = fake
        .delete_template_version(&template.id, 2)
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("unexpectedError"));
    fake.delete_template_version(&template.id, 1).await.unwrap();
    let err = fake
        .delete_template_version(&template.id, 1)
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("launchTemplateVersionDoesNotExist"));
    let err = fake.set_default_version(&template.id, 7).await.unwrap_err();
    assert_eq!(
        err.aws_code(),
        Some("InvalidLaunchTemplateId.VersionNotFound")
    );
    let view = fake.template(SEED_NAME).unwrap();
    assert_eq!(
        (
            view.default_version,
            view.latest_version,
            view.versions.len()
        ),
        (2, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn missing_templates_answer_awss_codes() {
    let fake = Fake::new(REGION);
    let err = fake
        .launch_template(&TemplateRef::Name("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(
        err.aws_code(),
        Some("InvalidLaunchTemplateName.NotFoundException")
    );
    let err = fake
        .template_versions("lt-00000000000000404")
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("InvalidLaunchTemplateId.NotFound"));
    assert!(fake.launch_templates().await.unwrap().is_empty());
    let id = fake.add_launch_template("mine", "ami-1");
    assert_eq!(fake.launch_templates().await.unwrap()[0].id, id);
}

#[tokio::test(start_paused = true)]
async fn refreshes_run_one_at_a_time_to_a_scripted_end() {
    let fake = Fake::seeded(REGION);
    let request = RefreshRequest {
        group: SEED_NAME.into(),
        min_healthy_percentage: 90,
        max_healthy_percentage: None,
        instance_warmup_secs: 60,
        skip_matching: true,
        desired: None,
        auto_rollback: false,
        bake_time_secs: None,
        alarms: Vec::new(),
    };
    fake.refresh_outcome(RefreshStatus::Failed, "health checks failed");
    let id = fake.start_refresh(&request).await.unwrap();
    let err = fake.start_refresh(&request).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("InstanceRefreshInProgress"));
    let first = fake.refresh(SEED_NAME, &id).await.unwrap().unwrap();
    assert_eq!(first.status, RefreshStatus::Pending);
    sleep(Duration::from_secs(3)).await;
    let middle = fake.refresh(SEED_NAME, &id).await.unwrap().unwrap();
    assert_eq!(
        (middle.status, middle.percentage_complete),
        (RefreshStatus::InProgress, 60)
    );
    sleep(Duration::from_secs(2)).await;
    let end = fake.refresh(SEED_NAME, &id).await.unwrap().unwrap();
    assert_eq!(
        (end.status, end.status_reason.as_str()),
        (RefreshStatus::Failed, "health checks failed")
    );
    assert!(fake.start_refresh(&request).await.is_ok());
    assert_eq!(fake.refresh_requests().len(), 2);

    assert_eq!(fake.refresh(SEED_NAME, "nope").await.unwrap(), None);
    let unknown = RefreshRequest {
        group: "nope".into(),
        ..request
    };
    let err = fake.start_refresh(&unknown).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("ValidationError"));
}

/// A launch-first refresh onto version 2 of the seed's template.
fn verified_request(template_id: &str) -> RefreshRequest {
    RefreshRequest {
        group: SEED_NAME.into(),
        min_healthy_percentage: 100,
        max_healthy_percentage: Some(200),
        instance_warmup_secs: 0,
        skip_matching: true,
        desired: Some(DesiredVersion {
            template_id: template_id.to_owned(),
            version: 2,
        }),
        auto_rollback: true,
        bake_time_secs: None,
        alarms: Vec::new(),
    }
}

async fn new_version(fake: &Fake) -> String {
    let template = fake
        .launch_template(&TemplateRef::Name(SEED_NAME.into()))
        .await
        .unwrap();
    let version = fake
        .create_template_version(&NewTemplateVersion {
            template_id: template.id.clone(),
            source_version: 1,
            image_id: "ami-new".into(),
            description: "new".into(),
            client_token: "t".into(),
        })
        .await
        .unwrap();
    assert_eq!(version, 2);
    template.id
}

#[tokio::test(start_paused = true)]
async fn a_launch_first_refresh_keeps_the_old_member_until_the_new_one_is_healthy() {
    let fake = Fake::seeded(REGION);
    let template_id = new_version(&fake).await;
    let group = fake.auto_scaling_group(SEED_NAME).await.unwrap().unwrap();
    let arn = group.target_group_arns[0].clone();
    let old = group.instances[0].id.clone();
    assert_eq!(group.launch_template.as_ref().unwrap().version, "$Default");
    // AWS does not roll back a refresh of a group on $Default: refused at start.
    let refused = fake
        .start_refresh(&verified_request(&template_id))
        .await
        .expect_err("AutoRollback on $Default");
    assert_eq!(refused.aws_code(), Some("ValidationError"));
    fake.set_group_launch_template(SEED_NAME, &template_id, "1")
        .await
        .unwrap();
    let id = fake
        .start_refresh(&verified_request(&template_id))
        .await
        .unwrap();
    sleep(Duration::from_secs(2)).await; // InProgress, first half: the new target is initial
    let during = fake.target_health(&arn).await.unwrap();
    let states: Vec<&str> = during.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states, ["healthy", "initial"]);
    assert_eq!(during[0].instance_id, old);
    sleep(Duration::from_secs(3)).await;
    let end = fake.refresh(SEED_NAME, &id).await.unwrap().unwrap();
    assert_eq!(end.status, RefreshStatus::Successful);
    let after = fake.auto_scaling_group(SEED_NAME).await.unwrap().unwrap();
    assert_eq!(after.instances.len(), 1);
    assert_ne!(after.instances[0].id, old);
    assert_eq!(after.instances[0].template_version.as_deref(), Some("2"));
    // AWS leaves the group on the desired configuration's version.
    assert_eq!(after.launch_template.unwrap().version, "2");
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_replacement_rolls_the_refresh_back() {
    let fake = Fake::seeded(REGION);
    let template_id = new_version(&fake).await;
    fake.unhealthy_targets(Some((
        "Target.ResponseCodeMismatch",
        "Health checks failed with these codes: [503]",
    )));
    fake.set_group_launch_template(SEED_NAME, &template_id, "1")
        .await
        .unwrap();
    let id = fake
        .start_refresh(&verified_request(&template_id))
        .await
        .unwrap();
    sleep(Duration::from_secs(3)).await;
    let arn = fake.target_group_of(SEED_NAME);
    let bad = fake.target_health(&arn).await.unwrap();
    assert_eq!(bad[1].state, "unhealthy");
    assert_eq!(bad[1].reason, "Target.ResponseCodeMismatch");
    sleep(Duration::from_secs(2)).await;
    let end = fake.refresh(SEED_NAME, &id).await.unwrap().unwrap();
    assert_eq!(end.status, RefreshStatus::RollbackSuccessful);
    let after = fake.auto_scaling_group(SEED_NAME).await.unwrap().unwrap();
    assert_eq!(after.instances[0].template_version.as_deref(), Some("1"));
    assert_eq!(
        after.launch_template.unwrap().version,
        "1",
        "back on the pinned number"
    );
    let err = fake.rollback_refresh(SEED_NAME).await.unwrap_err();
    assert_eq!(err.aws_code(), Some("ActiveInstanceRefreshNotFound"));
}

#[tokio::test(start_paused = true)]
async fn backdating_moves_wall_clock_births() {
    let fake = Fake::seeded(REGION);
    let image = fake.add_image("old", &[]);
    let instance = fake.add_instance_using(&image);
    let before = fake.instances()[0].launch_time.unwrap();
    let date = fake
        .all_images()
        .into_iter()
        .find(|i| i.id == image)
        .unwrap()
        .creation_date;
    fake.backdate(&instance, Duration::from_secs(3600));
    fake.backdate(&image, Duration::from_secs(86400));
    assert_eq!(
        fake.instances()[0].launch_time.unwrap() + Duration::from_secs(3600),
        before
    );
    let older = fake
        .all_images()
        .into_iter()
        .find(|i| i.id == image)
        .unwrap()
        .creation_date;
    assert!(older < date, "{older} < {date}");
    assert!(older.ends_with('Z') && older.contains('.'), "{older}");
}
