//! `quorumdb shell` (the real binary) against a 3-node cluster: a script on stdin whose output
//! is compared with the expected text (formatting, `.mode`, `.tables`, `.schema`,
//! `.consistency`), `-c` and `--stop-on-error`, the cluster dot-commands, a session through a
//! pseudo-terminal (prompts, a multi-line statement, completion, history), and failover when
//! the shell's node is killed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorumdb_tests::TestCluster;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_quorumdb-node");

fn shell(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("shell").args(args).env_remove("QUORUMDB_PASSWORD").env_remove("PGPASSWORD").kill_on_drop(true);
    cmd
}

/// Runs the shell with `stdin` piped in; (exit code, stdout, stderr).
async fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = shell(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the shell finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn follower(c: &TestCluster) -> u64 {
    let leader = c.wait_leader().await;
    c.running().into_iter().find(|id| *id != leader).unwrap()
}

const SCRIPT: &str = "\
CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION);
INSERT INTO users VALUES (1, 'alice', 9.5), (2, '名前', NULL),
  (3, 'semi;colon', -1.5); -- a comment; with a semicolon
SELECT * FROM users ORDER BY id;
SELECT name FROM users WHERE id = 42;
SELECT * FROM nope;
.mode csv
SELECT * FROM users ORDER BY id;
.mode json
SELECT id, score FROM users WHERE id < 3 ORDER BY id;
.mode line
SELECT * FROM users WHERE id = 1;
.mode table
CREATE INDEX users_name ON users (name);
UPDATE users SET score = 0 WHERE id = 3;
DELETE FROM users WHERE id = 3;
.tables
.schema users
.consistency stale
.consistency
SELECT count(*) AS n FROM users WHERE id <= 2;
.bogus
";

const EXPECTED: &str = "\
CREATE TABLE
INSERT 0 3
 id |    name    | score
----+------------+-------
  1 | alice      |   9.5
  2 | 名前       |
  3 | semi;colon |  -1.5
(3 rows)

 name
------
(0 rows)

id,name,score
1,alice,9.5
2,名前,
3,semi;colon,-1.5
[
  {\"id\":\"1\",\"score\":\"9.5\"},
  {\"id\":\"2\",\"score\":null}
]
   id = 1
 name = alice
score = 9.5
CREATE INDEX
UPDATE 1
DELETE 1
 name
-------
 users
(1 row)

CREATE TABLE users (
    id bigint NOT NULL,
    name text NOT NULL,
    score double precision,
    PRIMARY KEY (id)
);
CREATE INDEX users_name ON public.users USING btree (name);
 consistency
-------------
 stale
(1 row)

 n
---
 2
(1 row)

";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_on_stdin_through_a_follower() {
    let c = TestCluster::start(3).await;
    let f = follower(&c).await;
    let (code, out, err) = run(&["--host", &c.addr(f)], SCRIPT).await;
    assert_eq!(out, EXPECTED, "stderr:\n{err}");
    let errors: Vec<&str> = err.lines().collect();
    assert_eq!(errors.len(), 2, "{err}");
    assert!(errors[0].starts_with("<stdin>:6: ERROR:  ") && errors[0].contains("nope"), "{err}");
    assert_eq!(errors[1], "<stdin>:22: ERROR:  unknown command \".bogus\"; .help lists the commands");
    assert_eq!(code, 1, "a failed statement makes the exit status non-zero");
    // The writes went through Raft: every node has them.
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_files_and_stop_on_error() {
    let c = TestCluster::start(1).await;
    let host = c.addr(1);
    let (code, out, err) = run(&["-h", &host, "-c", "SELECT 1 AS one; SELECT 'x' AS two"], "").await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, " one\n-----\n   1\n(1 row)\n\n two\n-----\n x\n(1 row)\n\n", "")
    );

    // Straight to the PostgreSQL address, with a dot-command in -c.
    let (code, out, _) = run(&["--pg", &c.pg_addr(1), "-c", ".mode csv\nSELECT 2 AS n"], "").await;
    assert_eq!((code, out.as_str()), (0, "n\n2\n"));

    // Without --stop-on-error the script goes on after a failure; with it, it stops.
    let script = "SELECT 1 AS a;\nSELECT * FROM nope;\nSELECT 2 AS b;\n";
    let (code, out, _) = run(&["-h", &host], script).await;
    assert_eq!(code, 1);
    assert!(out.contains(" a\n") && out.contains(" b\n"), "{out}");
    let (code, out, err) = run(&["-h", &host, "--stop-on-error"], script).await;
    assert_eq!(code, 1);
    assert_eq!(out, " a\n---\n 1\n(1 row)\n\n", "{err}");

    // -f FILE, and .read of another file; a final statement without `;` still runs.
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner.sql");
    std::fs::write(&inner, "SELECT 'inner' AS w").unwrap();
    let outer = dir.path().join("outer.sql");
    std::fs::write(&outer, format!(".mode csv\n.read {}\nSELECT 'outer' AS w;\n", inner.display())).unwrap();
    let (code, out, err) = run(&["-h", &host, "-f", &outer.display().to_string()], "").await;
    assert_eq!((code, out.as_str()), (0, "w\ninner\nw\nouter\n"), "{err}");

    // Nothing listening: a clear error and exit status 2.
    let (code, _, err) = run(&["-h", "127.0.0.1:1"], "SELECT 1;").await;
    assert_eq!(code, 2);
    assert!(err.contains("127.0.0.1:1") && err.contains("does not answer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let f = follower(&c).await;
    let (code, out, err) = run(&["--host", &c.addr(f)], ".mode csv\n.nodes\n.leader\n").await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "id,addr,pg_addr,role,term,applied,leader,shell");
    for id in 1..=3u64 {
        let row: Vec<&str> = lines[id as usize].split(',').collect();
        assert_eq!((row[0], row[1], row[2]), (id.to_string().as_str(), c.addr(id).as_str(), c.pg_addr(id).as_str()));
        assert_eq!(row[3], if id == leader { "leader" } else { "follower" }, "{out}");
        assert!(row[5].parse::<u64>().is_ok(), "applied index: {out}");
        assert_eq!(row[6], if id == leader { "*" } else { "" }, "{out}");
        assert_eq!(row[7], if id == f { "connected" } else { "" }, "{out}");
    }
    assert!(lines[4].starts_with(&format!("node {leader} at {} (term ", c.addr(leader))), "{out}");

    // Move the leadership to the shell's node, then take a snapshot there.
    let (code, out, err) = run(&["--host", &c.addr(f)], &format!(".transfer {f}\n.snapshot\n.transfer 99\n")).await;
    assert!(out.starts_with(&format!("node {f} is the leader now (term ")), "{out}\n{err}");
    assert!(out.contains(&format!("\nnode {f} took a snapshot\n")), "{out}\n{err}");
    assert_eq!(code, 1, "transfer to a node that does not exist fails: {err}");
    assert!(err.contains("<stdin>:3: ERROR:"), "{err}");
    assert_eq!(c.wait_leader().await, f);

    // Bad arguments are reported, not sent.
    let (code, _, err) = run(&["--host", &c.addr(f)], ".remove x\n.join 4\n").await;
    assert_eq!(code, 1);
    assert!(err.contains("not a node id") && err.contains("usage: .join ID ADDR"), "{err}");
    // Without --host there is no HTTP address for cluster commands.
    let (_, _, err) = run(&["--pg", &c.pg_addr(f)], ".nodes\n").await;
    assert!(err.contains("cluster commands need --host"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudo_terminal_session() {
    let c = TestCluster::start(1).await;
    c.sql_value(1, "CREATE TABLE shell_pty (id INT PRIMARY KEY)", "linearizable").await;
    c.sql_value(1, "INSERT INTO shell_pty VALUES (1), (2)", "linearizable").await;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/shell/pty_session.py");
    let host = c.addr(1);
    let out = Command::new("/usr/bin/python3")
        .args([script, &history.display().to_string(), BIN, "shell", "--host", &host])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(transcript.contains("connected to node 1 (PostgreSQL protocol at"), "{transcript}");
    assert!(transcript.contains("quorumdb@1=> SELECT 'multi' AS a,\nquorumdb@1->   2 AS b;\n"), "{transcript}");
    assert!(transcript.contains("   a   | b\n-------+---\n multi | 2\n(1 row)\n"), "{transcript}");
    // Tab completed the table name.
    assert!(transcript.contains(" n\n---\n 2\n(1 row)\n"), "{transcript}");
    let history = std::fs::read_to_string(&history).unwrap();
    assert!(history.contains("SELECT 'multi' AS a,\\n  2 AS b;\n"), "{history}");
    assert!(history.contains("SELECT count(*) AS n FROM shell_pty;\n"), "{history}");
}

/// A shell on stdin/stdout pipes, driven step by step.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
}

impl Session {
    fn start(args: &[&str]) -> Self {
        let mut child =
            shell(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Session { child, stdin, stdout, stderr }
    }

    async fn send(&mut self, text: &str) {
        self.stdin.write_all(text.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Stdout lines up to and including one equal to `last`.
    async fn read_until(&mut self, last: &str) -> String {
        let mut out = String::new();
        let read = async {
            loop {
                let mut line = String::new();
                if self.stdout.read_line(&mut line).await.unwrap() == 0 {
                    return false;
                }
                out.push_str(&line);
                if line.trim_end() == last {
                    return true;
                }
            }
        };
        let found = tokio::time::timeout(Duration::from_secs(30), read).await;
        assert!(matches!(found, Ok(true)), "no line {last:?} in:\n{out}\nstderr:\n{}", self.stderr());
        out
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_the_node_dies() {
    let mut c = TestCluster::start(3).await;
    let x = follower(&c).await;
    let mut s = Session::start(&["--host", &c.addr(x)]);
    s.send(".consistency lease\nCREATE TABLE kv2 (k INT PRIMARY KEY, v TEXT);\nINSERT INTO kv2 VALUES (1, 'one');\n")
        .await;
    s.read_until("INSERT 0 1").await;

    c.kill(x).await;
    // A read runs on another node (retried there if it was under way).
    s.send("SELECT v FROM kv2 WHERE k = 1;\n").await;
    assert_eq!(s.read_until("(1 row)").await, "  v\n-----\n one\n(1 row)\n");
    let err = s.stderr();
    assert!(
        err.contains(&format!(
            "connection to node {x} (PostgreSQL protocol at {}) lost; now connected to node ",
            c.pg_addr(x)
        )),
        "{err}"
    );
    // The session setting followed the shell to the new node.
    s.send("SHOW consistency;\n").await;
    assert!(s.read_until("(1 row)").await.contains(" lease\n"));
    // Writes work there too.
    s.send("INSERT INTO kv2 VALUES (2, 'two');\n.mode csv\n.nodes\nSELECT 'end' AS done;\n").await;
    s.read_until("INSERT 0 1").await;
    let nodes = s.read_until("end").await;
    assert!(nodes.contains(&format!("\n{x},{},,unreachable,,,,\n", c.addr(x))), "{nodes}");
    assert_eq!(nodes.matches(",connected\n").count(), 1, "{nodes}");
    drop(s.stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), s.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "stderr:\n{}", s.stderr.lock().unwrap());
    assert_eq!(c.sql_value(c.running()[0], "SELECT count(*) FROM kv2", "linearizable").await, 2);
}
