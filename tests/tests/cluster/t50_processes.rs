//! Real `quorumdb` processes: SIGKILL the leader mid-load, restart it, and compare the three
//! nodes' data and checksums.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorumdb_tests::wait_for;
use serde_json::Value;

use crate::t20_leader_kill::write_stream;

/// One `quorumdb` process: its command line, its child while running, and its log file.
pub(crate) struct Proc {
    pub id: u64,
    pub args: Vec<String>,
    pub child: Option<Child>,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_quorumdb-node"))
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn quorumdb");
        self.child = Some(child);
    }

    pub fn sigkill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) async fn status(http: &reqwest::Client, addr: &str) -> Option<Value> {
    http.get(format!("http://{addr}/v1/status")).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leader_process_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut procs: Vec<Proc> = (1..=3u64)
        .map(|id| {
            let mut args = vec![
                "start".to_string(),
                "--id".into(),
                id.to_string(),
                "--data-dir".into(),
                dir.path().join(format!("n{id}")).display().to_string(),
                "--listen".into(),
                addrs[id as usize - 1].clone(),
                "--heartbeat-ms".into(),
                "50".into(),
                "--election-timeout-ms".into(),
                "300".into(),
                "--pg-listen".into(),
                "127.0.0.1:0".into(),
                "--redis-listen".into(),
                "127.0.0.1:0".into(),
            ];
            if id == 1 {
                args.push("--init".into());
            } else {
                args.extend(["--join".into(), addrs[0].clone()]);
            }
            Proc { id, args, child: None, log: dir.path().join(format!("n{id}.log")) }
        })
        .collect();
    for p in &mut procs {
        p.spawn();
    }
    wait_for(60, "a 3-voter cluster", || async {
        let s = status(&http, &addrs[0]).await?;
        (s["members"].as_array()?.len() == 3 && s["leader"].is_u64()).then_some(())
    })
    .await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_stream(http.clone(), addrs.clone(), "p", 300, acked.clone()));
    wait_for(60, "80 acknowledged writes", || async { (acked.lock().unwrap().len() >= 80).then_some(()) }).await;
    let leader = status(&http, &addrs[0]).await.and_then(|s| s["leader"].as_u64()).expect("a leader");
    let lp = procs.iter_mut().find(|p| p.id == leader).unwrap();
    lp.sigkill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    lp.args.retain(|a| a != "--init"); // a restart needs no flags beyond where its data is
    lp.spawn();
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 290, "most writes acknowledged: {}", acked.len());

    // All three converge on the same applied index and checksum, and hold every acked key.
    let sums = wait_for(60, "equal checksums on all three processes", || async {
        let mut v = Vec::new();
        for a in &addrs {
            let s = status(&http, a).await?;
            v.push((s["applied"].as_u64()?, s["checksum"].as_str()?.to_string()));
        }
        v.dedup();
        (v.len() == 1).then(|| v[0].clone())
    })
    .await;
    assert_ne!(sums.1, "0000000000000000");
    for a in &addrs {
        for k in &acked {
            let r = http.get(format!("http://{a}/v1/kv/{k}?consistency=stale")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{a} lost {k}");
        }
    }
    // Graceful stop on SIGTERM.
    for p in &mut procs {
        let c = p.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "node {} exited cleanly on SIGTERM: {:?}", p.id, out.status);
    }
}
