//! `--events FILE`: the build's progress as NDJSON, one JSON object per line, for CI dashboards
//! (what Packer's `-machine-readable` offers). Every line has `at` (UTC, RFC 3339 with
//! milliseconds) and `event`; the other keys depend on the event:
//!
//! - `started`: `phase`, and for a step `step`, `index` (1-based) and `total`;
//! - `progress`: `phase`, `state` (what the phase waits for reached a new state: `pending`...);
//! - `finished`: `phase`, `result` (`ami-…`, `i-…`, or empty);
//! - `failed`: `phase`, `message`;
//! - `notice`, `warning`: `message`.
//!
//! Step output is not in the stream (it is in the build folder). [`Both`] sends every event to
//! the terminal's reporter and to the stream.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::report::{Phase, Reporter};

/// Writes each event as one line of JSON.
pub struct Events {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Events {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Events> {
        let file = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(Events::to(Box::new(file)))
    }

    pub fn to(out: Box<dyn Write + Send>) -> Events {
        Events {
            out: Mutex::new(out),
        }
    }

    fn emit(&self, event: &str, fields: Value) {
        let mut line = Map::new();
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        line.insert("at".into(), json!(at.to_string()));
        line.insert("event".into(), json!(event));
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk must not stop the build: the stream is a by-product.
        let _ = writeln!(out, "{}", Value::Object(line)).and_then(|_| out.flush());
    }
}

/// The `phase` key, plus `step`, `index` and `total` for a step.
fn phase_fields(phase: &Phase, extra: Value) -> Value {
    let mut fields = json!({ "phase": phase.to_string() });
    if let Phase::Step { index, total, name } = phase {
        fields["step"] = json!(name);
        fields["index"] = json!(index + 1);
        fields["total"] = json!(total);
    }
    if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
        fields.extend(extra);
    }
    fields
}

impl Reporter for Events {
    fn phase_started(&self, phase: &Phase) {
        self.emit("started", phase_fields(phase, json!({})));
    }
    fn phase_progress(&self, phase: &Phase, state: &str) {
        self.emit("progress", phase_fields(phase, json!({ "state": state })));
    }
    fn phase_finished(&self, phase: &Phase, result: &str) {
        self.emit("finished", phase_fields(phase, json!({ "result": result })));
    }
    fn phase_failed(&self, phase: &Phase, message: &str) {
        self.emit("failed", phase_fields(phase, json!({ "message": message })));
    }
    fn notice(&self, message: &str) {
        self.emit("notice", json!({ "message": message }));
    }
    fn warning(&self, message: &str) {
        self.emit("warning", json!({ "message": message }));
    }
}

/// Sends every event to both reporters, the first first.
pub struct Both<'a>(pub &'a dyn Reporter, pub &'a dyn Reporter);

impl Reporter for Both<'_> {
    fn phase_started(&self, phase: &Phase) {
        self.0.phase_started(phase);
        self.1.phase_started(phase);
    }
    fn phase_progress(&self, phase: &Phase, state: &str) {
        self.0.phase_progress(phase, state);
        self.1.phase_progress(phase, state);
    }
    fn phase_finished(&self, phase: &Phase, result: &str) {
        self.0.phase_finished(phase, result);
        self.1.phase_finished(phase, result);
    }
    fn phase_failed(&self, phase: &Phase, message: &str) {
        self.0.phase_failed(phase, message);
        self.1.phase_failed(phase, message);
    }
    fn step_line(&self, phase: &Phase, line: &str) {
        self.0.step_line(phase, line);
        self.1.step_line(phase, line);
    }
    fn step_output(&self, step: &str, stdout: &str, stderr: &str, streamed: bool) {
        self.0.step_output(step, stdout, stderr, streamed);
        self.1.step_output(step, stdout, stderr, streamed);
    }
    fn notice(&self, message: &str) {
        self.0.notice(message);
        self.1.notice(message);
    }
    fn warning(&self, message: &str) {
        self.0.warning(message);
        self.1.warning(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_is_one_line_of_json_with_its_fields() {
        let shared = Shared::default();
        let events = Events::to(Box::new(shared.clone()));
        let step = Phase::Step {
            index: 1,
            total: 3,
            name: "install".into(),
        };
        events.phase_started(&step);
        events.phase_progress(&Phase::WaitImage, "pending");
        events.phase_finished(&Phase::LaunchBuilder, "i-1");
        events.phase_failed(&step, "exit 1");
        events.notice("reusing");
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 5);
        assert!(lines
            .iter()
            .all(|l| l["at"].as_str().unwrap().ends_with('Z')));
        assert_eq!(lines[0]["event"], json!("started"));
        assert_eq!(lines[0]["phase"], json!("step 2/3: install"));
        assert_eq!(lines[0]["step"], json!("install"));
        assert_eq!(lines[0]["index"], json!(2));
        assert_eq!(lines[0]["total"], json!(3));
        assert_eq!(lines[1]["state"], json!("pending"));
        assert_eq!(lines[2]["result"], json!("i-1"));
        assert_eq!(lines[3]["message"], json!("exit 1"));
        assert_eq!(
            lines[4],
            json!({"at": lines[4]["at"], "event": "notice", "message": "reusing"})
        );
    }
}
