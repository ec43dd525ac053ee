//! The rudder recipe's drain on termination (recipes/files/rudder-drain*): the shipped
//! pending-jobs query run with psql against a real PostgreSQL that the test starts (initdb and
//! pg_ctl on PATH; as root they run as the `postgres` user), in a jobsdb whose tables are created
//! as rudder-server v1.83.0 creates them; and the script and unit pass shellcheck and
//! `systemd-analyze verify`, as the image's other units do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

const INSTALL_HINT: &str = "the drain tests need PostgreSQL's initdb, pg_ctl and psql on PATH \
     (Debian: apt-get install postgresql, then put /usr/lib/postgresql/<major>/bin on PATH), \
     shellcheck (apt-get install shellcheck) and systemd-analyze (apt-get install systemd)";

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}; {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Fails (never skips) when `program` is not on PATH, with the install hint.
fn require(program: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    assert!(
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file()),
        "{program} is not on PATH: {INSTALL_HINT}"
    );
}

/// initdb and the server refuse to run as root: then they run as the `postgres` user.
fn as_server_user(program: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL cluster in a temporary directory, listening on a unix socket only; stopped when
/// dropped.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        for program in ["initdb", "pg_ctl", "psql"] {
            require(program);
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            run(
                Command::new("chown").args(["postgres:", dir.path().to_str().unwrap()]),
                "chown the cluster directory to postgres (as root, initdb runs as the postgres user)",
            );
        }
        let data = dir.path().join("data");
        run(
            as_server_user("initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
            "initdb",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let options = format!(
            "-c listen_addresses='' -k {} -p {port} -c fsync=off",
            dir.path().display()
        );
        run(
            as_server_user("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .args(["-l"])
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "start"]),
            "pg_ctl start",
        );
        let pg = Postgres { dir, port };
        pg.psql_command("CREATE DATABASE jobsdb", "postgres");
        pg
    }

    fn psql(&self, database: &str) -> Command {
        let mut command = Command::new("psql");
        command
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-d", database]);
        command
    }

    fn psql_command(&self, sql: &str, database: &str) -> String {
        let output = run(self.psql(database).args(["-c", sql]), "psql -c");
        String::from_utf8(output.stdout).unwrap()
    }

    fn psql_file(&self, file: &Path, database: &str) -> String {
        let output = run(
            self.psql(database).arg("-f").arg(file),
            &format!("psql -f {}", file.display()),
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_server_user("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

/// One dataset's DDL as rudder-server v1.83.0 runs it: jobsdb/jobsdb_dataset_ddl.go
/// (createDSTablesInTx with the default JSONB payload column, createDSJobIndicesInTx without the
/// parameter-filter indices, createDSStatusIndicesInTx), names from jobsdb/jobsdb_dataset.go
/// (newDataSet, consumersRegistryTable). `multi`: a WithMultiConsumer handle (the proc jobsdb).
fn dataset_ddl(prefix: &str, index: &str, multi: bool) -> String {
    let jobs = format!("{prefix}_jobs_{index}");
    let status = format!("{prefix}_job_status_{index}");
    let mut sql = format!(
        r#"CREATE TABLE "{jobs}" (
		job_id BIGSERIAL PRIMARY KEY,
		workspace_id TEXT NOT NULL DEFAULT '',
		uuid UUID NOT NULL,
		user_id TEXT NOT NULL,
		partition_id TEXT NOT NULL DEFAULT '',
		parameters JSONB NOT NULL,
		custom_val VARCHAR(64) NOT NULL,
		event_payload JSONB NOT NULL,
		event_count INTEGER NOT NULL DEFAULT 1,
		created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
		expire_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
		consumers TEXT[] NOT NULL DEFAULT '{{""}}') WITH (autovacuum_vacuum_insert_scale_factor = 0.02);
CREATE TABLE "{status}" (
		id BIGSERIAL,
		job_id BIGINT,
		job_state VARCHAR(64),
		attempt SMALLINT,
		exec_time TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
		retry_time TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
		error_code VARCHAR(32),
		error_response JSONB DEFAULT '{{}}'::JSONB,
		parameters JSONB DEFAULT '{{}}'::JSONB,
		consumer TEXT NOT NULL DEFAULT '') WITH (autovacuum_vacuum_insert_scale_factor = 0.02);
CREATE INDEX "idx_{jobs}_ws" ON "{jobs}" (workspace_id);
CREATE INDEX "idx_{jobs}_partid" ON "{jobs}" (partition_id);
CREATE INDEX "idx_{jobs}_cv" ON "{jobs}" (custom_val);
CREATE INDEX "idx_{status}_id_js" ON "{status}"(id ,job_state) INCLUDE (exec_time);
CREATE VIEW "v_last_{status}" AS SELECT DISTINCT ON (job_id) * FROM "{status}" ORDER BY job_id ASC, id DESC;
"#
    );
    if multi {
        sql.push_str(&format!(
            r#"CREATE TABLE "{prefix}_consumers_{index}" (consumer TEXT PRIMARY KEY);
CREATE INDEX "idx_{jobs}_consumers" ON "{jobs}" USING GIN (consumers);
CREATE INDEX "idx_{jobs}_jid_c" ON "{jobs}" (job_id) INCLUDE (consumers);
CREATE INDEX "idx_{status}_jid_c_id_js" ON "{status}" (job_id ASC, consumer, id DESC, job_state);
CREATE VIEW "v_last_c_{status}" AS SELECT DISTINCT ON (job_id, consumer) * FROM "{status}" ORDER BY job_id ASC, consumer, id DESC;
"#
        ));
    } else {
        sql.push_str(&format!(
            r#"CREATE INDEX "idx_{status}_jid_id_js" ON "{status}"(job_id asc,id desc,job_state);
"#
        ));
    }
    sql
}

/// Jobs and their status histories (oldest first; `consumer:state` on a multi-consumer dataset).
fn fill(prefix: &str, index: &str, jobs: &[(&[&str], &[&str])]) -> String {
    let mut sql = String::new();
    for (n, (consumers, history)) in jobs.iter().enumerate() {
        let job_id = n + 1;
        let consumers = consumers
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(",");
        sql.push_str(&format!(
            "INSERT INTO \"{prefix}_jobs_{index}\" (job_id, uuid, user_id, parameters, custom_val, event_payload, consumers) \
             VALUES ({job_id}, gen_random_uuid(), 'u{job_id}', '{{}}', 'WEBHOOK', '{{}}', '{{{consumers}}}');\n"
        ));
        for entry in history.iter() {
            let (consumer, state) = entry.split_once(':').unwrap_or(("", entry));
            sql.push_str(&format!(
                "INSERT INTO \"{prefix}_job_status_{index}\" (job_id, job_state, attempt, consumer) \
                 VALUES ({job_id}, '{state}', 1, '{consumer}');\n"
            ));
        }
    }
    sql
}

fn pending_sql() -> PathBuf {
    repo_root().join("recipes/files/rudder-drain-pending.sql")
}

#[test]
fn the_shipped_query_counts_the_jobs_rudder_server_has_not_finished() {
    let pg = Postgres::start();
    // No dataset yet (rudder-server not started): nothing pending, one row per jobsdb.
    assert_eq!(
        pg.psql_file(&pending_sql(), "jobsdb"),
        "gw|0\nproc|0\nrt|0\nbatch_rt|0\n"
    );

    let none: &[&str] = &[""];
    let mut fixture = String::new();
    for (prefix, index, multi) in [
        ("gw", "1", false),
        ("rt", "1", false),
        ("rt", "2", false),
        ("rt", "3", false),
        ("batch_rt", "1", false),
        ("proc", "1", true),
        ("esch", "1", false),
        ("arc", "1", false),
    ] {
        fixture.push_str(&dataset_ddl(prefix, index, multi));
    }
    // gw: 5 pending of 9. Unprocessed, executing, the latest status failed (after a succeeded:
    // the latest row by id counts, not any terminal one), waiting, importing are pending.
    fixture.push_str(&fill(
        "gw",
        "1",
        &[
            (none, &[]),
            (none, &["executing"]),
            (none, &["executing", "failed", "succeeded"]),
            (none, &["succeeded", "failed"]),
            (none, &["executing", "aborted"]),
            (none, &["waiting"]),
            (none, &["migrated"]),
            (none, &["filtered"]),
            (none, &["importing"]),
        ],
    ));
    // rt: 2 pending, over two datasets; rt_jobs_3 is marked for drop (its jobs were copied on),
    // so its pending jobs do not count.
    fixture.push_str(&fill(
        "rt",
        "1",
        &[(none, &["succeeded"]), (none, &["failed"])],
    ));
    fixture.push_str(&fill("rt", "2", &[(none, &[])]));
    fixture.push_str(&fill("rt", "3", &[(none, &[]), (none, &["failed"])]));
    fixture.push_str("COMMENT ON TABLE \"rt_jobs_3\" IS 'rudder:pre_drop:v1';\n");
    fixture.push_str(&fill(
        "batch_rt",
        "1",
        &[(none, &["executing"]), (none, &["aborted"])],
    ));
    // proc (multi-consumer): a job is pending while one of its consumers' latest status is not
    // terminal; another consumer's status does not finish it.
    fixture.push_str(&fill(
        "proc",
        "1",
        &[
            (&["d1", "d2"], &["d1:succeeded", "d2:failed"]),
            (&["d1", "d2"], &["d1:succeeded", "d2:filtered"]),
            (&["d1"], &[]),
            (
                &["d1", "d2"],
                &["d1:failed", "d2:aborted", "d1:executing", "d1:succeeded"],
            ),
            (&["d1"], &["d2:succeeded"]),
            (
                &["d1", "d2"],
                &["d2:succeeded", "d1:succeeded", "d2:failed"],
            ),
        ],
    ));
    // Not on the way out of the instance: event schemas and archival.
    fixture.push_str(&fill("esch", "1", &[(none, &[])]));
    fixture.push_str(&fill("arc", "1", &[(none, &[])]));
    let file = pg.dir.path().join("fixture.sql");
    std::fs::write(&file, &fixture).unwrap();
    pg.psql_file(&file, "jobsdb");

    assert_eq!(
        pg.psql_file(&pending_sql(), "jobsdb"),
        "gw|5\nproc|4\nrt|2\nbatch_rt|1\n",
        "pending jobs per jobsdb, from {}",
        pending_sql().display()
    );

    // Everything delivered: nothing pending.
    pg.psql_command(
        "INSERT INTO gw_job_status_1 (job_id, job_state, attempt) SELECT job_id, 'succeeded', 2 FROM gw_jobs_1;
         INSERT INTO rt_job_status_1 (job_id, job_state, attempt) SELECT job_id, 'aborted', 2 FROM rt_jobs_1;
         INSERT INTO rt_job_status_2 (job_id, job_state, attempt) SELECT job_id, 'succeeded', 1 FROM rt_jobs_2;
         INSERT INTO batch_rt_job_status_1 (job_id, job_state, attempt) SELECT job_id, 'succeeded', 1 FROM batch_rt_jobs_1;
         INSERT INTO proc_job_status_1 (job_id, job_state, attempt, consumer)
           SELECT job_id, 'succeeded', 1, c FROM proc_jobs_1, unnest(consumers) AS c;",
        "jobsdb",
    );
    assert_eq!(
        pg.psql_file(&pending_sql(), "jobsdb"),
        "gw|0\nproc|0\nrt|0\nbatch_rt|0\n"
    );
}

#[test]
fn the_drain_script_passes_shellcheck() {
    require("shellcheck");
    run(
        Command::new("shellcheck").arg(repo_root().join("recipes/files/rudder-drain.sh")),
        "shellcheck recipes/files/rudder-drain.sh",
    );
}

#[test]
fn the_drain_unit_passes_systemd_analyze_verify() {
    // The unit as shipped, but for its ExecStart= path: the script is not installed on this
    // machine, so the copy runs it from a temporary directory (verify checks it is executable).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rudder-drain");
    std::fs::copy(repo_root().join("recipes/files/rudder-drain.sh"), &script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shipped = read(&repo_root().join("recipes/files/rudder-drain.service"));
    assert!(
        shipped.contains("ExecStart=/usr/local/sbin/rudder-drain\n"),
        "rudder-drain.service runs /usr/local/sbin/rudder-drain, where backend.yaml installs it"
    );
    let unit = dir.path().join("rudder-drain.service");
    std::fs::write(
        &unit,
        shipped.replace(
            "ExecStart=/usr/local/sbin/rudder-drain\n",
            &format!("ExecStart={}\n", script.display()),
        ),
    )
    .unwrap();
    require("systemd-analyze");
    let output = run(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        "systemd-analyze verify rudder-drain.service",
    );
    // Settings systemd cannot parse are only warned about ("..., ignoring"): none allowed.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify rudder-drain.service warned:\n{stderr}"
    );
}

/// A stand-in for IMDSv2: a token on `PUT /latest/api/token`, then the meta-data items the drain
/// reads (404 for any other, as for an instance tag when instance metadata tags are off).
struct FakeImds {
    url: String,
    state: std::sync::Arc<std::sync::Mutex<String>>,
}

impl FakeImds {
    fn start() -> FakeImds {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = std::sync::Arc::new(std::sync::Mutex::new("InService".to_string()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut token_ok = false;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    token_ok |= header.eq_ignore_ascii_case("x-aws-ec2-metadata-token: t0k3n\r\n");
                }
                let mut parts = request.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let body = match (method, path) {
                    ("PUT", "/latest/api/token") => Some("t0k3n".to_string()),
                    ("GET", _) if !token_ok => None,
                    ("GET", "/latest/meta-data/autoscaling/target-lifecycle-state") => {
                        Some(shared.lock().unwrap().clone())
                    }
                    ("GET", "/latest/meta-data/instance-id") => Some("i-0123456789abcdef0".into()),
                    ("GET", "/latest/meta-data/placement/region") => Some("eu-west-1".into()),
                    _ => None,
                };
                let response = match body {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                let mut stream = stream;
                let _ = stream.write_all(response.as_bytes());
            }
        });
        FakeImds { url, state }
    }

    fn set_state(&self, state: &str) {
        *self.state.lock().unwrap() = state.to_string();
    }
}

/// Stand-ins on PATH for what only an instance has: `aws` (records its arguments), `nft`
/// (records its rules), `ss` (the gateway's open connections, see below), `runuser` (runs the command as this user; psql
/// then reaches the test's PostgreSQL through PGHOST/PGPORT/PGUSER).
fn stub_bin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls.log");
    for (name, body) in [
        (
            "aws",
            format!("printf 'aws %s\\n' \"$*\" >>'{}'", log.display()),
        ),
        (
            "nft",
            format!(
                "{{ printf 'nft %s\\n' \"$*\"; cat; }} >>'{}'",
                log.display()
            ),
        ),
        // A connection from outside while the file `open` exists, and one over loopback always.
        (
            "ss",
            format!(
                "echo '0 0 127.0.0.1:8080 127.0.0.1:40000'\n[[ -e '{}' ]] && echo '0 0 10.0.0.5:8080 10.0.1.9:51234'\nexit 0",
                dir.join("open").display()
            ),
        ),
        (
            "runuser",
            "while [[ $1 != -- ]]; do shift; done; shift; exec \"$@\"".to_string(),
        ),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn status_json(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("state/status.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Runs the shipped script against the fake IMDS, the stubs and the test's PostgreSQL.
fn start_drain(pg: &Postgres, imds: &FakeImds, dir: &Path, limit_seconds: u32) -> Drain {
    let bin = stub_bin(dir);
    let conf = dir.join("drain.conf");
    std::fs::write(
        &conf,
        format!(
            "LIFECYCLE_HOOK_NAME=kiln-drain\nAUTO_SCALING_GROUP=rudder-dataplane\nJOBSDB_NAME=jobsdb\n\
             GATEWAY_PORT=8080\nDRAIN_LIMIT_SECONDS={limit_seconds}\nHEARTBEAT_SECONDS=1\nPOLL_SECONDS=1\n\
             GATEWAY_QUIESCE_SECONDS=30\n"
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(repo_root().join("recipes/files/rudder-drain.sh"))
        .env("PATH", path)
        .env("RUDDER_DRAIN_CONF", &conf)
        .env("RUDDER_DRAIN_PENDING_SQL", pending_sql())
        .env("RUDDER_DRAIN_STATE_DIR", dir.join("state"))
        .env("RUDDER_DRAIN_IMDS", &imds.url)
        .env_remove("AWS_REGION")
        .env("PGHOST", pg.dir.path())
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Drain)
        .expect("run rudder-drain.sh")
}

/// The running script, killed if the test ends before it does.
struct Drain(std::process::Child);

impl Drop for Drain {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_exit(Drain(child): &mut Drain) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rudder-drain.sh did not end within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_drain_holds_the_termination_until_the_jobsdb_is_empty_then_continues() {
    require("bash");
    let pg = Postgres::start();
    let mut fixture = dataset_ddl("gw", "1", false);
    let none: &[&str] = &[""];
    fixture.push_str(&fill(
        "gw",
        "1",
        &[(none, &[]), (none, &["executing"]), (none, &["succeeded"])],
    ));
    let file = pg.dir.path().join("fixture.sql");
    std::fs::write(&file, &fixture).unwrap();
    pg.psql_file(&file, "jobsdb");

    let imds = FakeImds::start();
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls.log");
    let mut drain = start_drain(&pg, &imds, dir.path(), 600);

    // In service: it watches and touches nothing.
    assert!(
        eventually(Duration::from_secs(10), || status_json(dir.path())["phase"]
            == "watching"),
        "status.json: {}",
        status_json(dir.path())
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!calls.exists(), "calls while in service: {}", read(&calls));

    // Terminated: the gateway refuses new connections, and the drain waits for the one still
    // open from outside (the loopback one does not count) before anything else.
    std::fs::write(dir.path().join("open"), "").unwrap();
    imds.set_state("Terminated");
    assert!(
        eventually(Duration::from_secs(10), || status_json(dir.path())["phase"]
            == "stopping-traffic"),
        "status.json: {}",
        status_json(dir.path())
    );
    std::thread::sleep(Duration::from_secs(2));
    let status = status_json(dir.path());
    assert_eq!(status["phase"], "stopping-traffic", "{status}");
    assert!(
        !read(&calls).contains("record-lifecycle-action-heartbeat"),
        "{}",
        read(&calls)
    );
    std::fs::remove_file(dir.path().join("open")).unwrap();

    // Then it waits for the 2 pending jobs with heartbeats, and does not complete the
    // lifecycle action while they are pending.
    assert!(
        eventually(Duration::from_secs(20), || {
            calls.exists() && read(&calls).contains("record-lifecycle-action-heartbeat")
        }),
        "no heartbeat; calls: {:?}; status.json: {}",
        std::fs::read_to_string(&calls),
        status_json(dir.path())
    );
    let status = status_json(dir.path());
    assert_eq!(status["phase"], "waiting", "{status}");
    assert_eq!(status["pending_at_start"], 2, "{status}");
    assert_eq!(status["pending_by_jobsdb"]["gw"], 2, "{status}");
    let log = read(&calls);
    assert!(
        log.contains("tcp dport 8080 ct state new reject"),
        "no gateway rule: {log}"
    );
    assert!(
        log.contains(
            "aws autoscaling record-lifecycle-action-heartbeat --lifecycle-hook-name kiln-drain \
             --auto-scaling-group-name rudder-dataplane --instance-id i-0123456789abcdef0 \
             --region eu-west-1"
        ),
        "{log}"
    );
    assert!(
        !log.contains("complete-lifecycle-action"),
        "completed too early: {log}"
    );

    // Delivered: it completes the action with CONTINUE and ends.
    pg.psql_command(
        "INSERT INTO gw_job_status_1 (job_id, job_state, attempt) VALUES (1, 'succeeded', 1), (2, 'aborted', 1)",
        "jobsdb",
    );
    assert!(wait_exit(&mut drain).success());
    let log = read(&calls);
    assert!(
        log.contains(
            "aws autoscaling complete-lifecycle-action --lifecycle-action-result CONTINUE \
             --lifecycle-hook-name kiln-drain --auto-scaling-group-name rudder-dataplane \
             --instance-id i-0123456789abcdef0 --region eu-west-1"
        ),
        "{log}"
    );
    let status = status_json(dir.path());
    assert_eq!(status["phase"], "completed", "{status}");
    assert_eq!(status["outcome"], "drained", "{status}");
    assert_eq!(status["pending_now"], 0, "{status}");
}

#[test]
fn the_drain_gives_up_at_its_limit_and_still_continues() {
    let pg = Postgres::start();
    let mut fixture = dataset_ddl("rt", "1", false);
    let none: &[&str] = &[""];
    fixture.push_str(&fill("rt", "1", &[(none, &["failed"])]));
    let file = pg.dir.path().join("fixture.sql");
    std::fs::write(&file, &fixture).unwrap();
    pg.psql_file(&file, "jobsdb");

    let imds = FakeImds::start();
    imds.set_state("Terminated");
    let dir = tempfile::tempdir().unwrap();
    let mut drain = start_drain(&pg, &imds, dir.path(), 3);
    assert!(wait_exit(&mut drain).success());
    let log = read(&dir.path().join("calls.log"));
    assert!(
        log.contains("complete-lifecycle-action --lifecycle-action-result CONTINUE"),
        "{log}"
    );
    let status = status_json(dir.path());
    assert_eq!(status["outcome"], "limit", "{status}");
    assert_eq!(status["pending_now"], 1, "{status}");
    assert!(status["waited_seconds"].as_u64().unwrap() >= 3, "{status}");
}
