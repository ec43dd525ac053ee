//! The rudder recipe's drain on termination (recipes/files/rudder-drain*): the shipped
//! pending-jobs query run with psql against a real PostgreSQL that the test starts (initdb and
//! pg_ctl on PATH; as root they run as the `postgres` user), in a jobsdb whose tables are created
//! as rudder-server v1.83.0 creates them; and the script and unit pass shellcheck and
//! `systemd-analyze verify`, as the image's other units do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
