//! `quorumdb demo`: three real `quorumdb start` processes on loopback, sample data, and how
//! to poke at them. Separate processes, so a user can `kill -9` the leader and watch.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Folder for the three nodes' data and logs (kept between runs).
    #[arg(long, default_value = "quorumdb-demo")]
    pub dir: PathBuf,
    /// Node N listens on 127.0.0.1:(base_port + N - 1).
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Node N serves PostgreSQL clients on 127.0.0.1:(pg_port + N - 1).
    #[arg(long, default_value_t = 5433)]
    pub pg_port: u16,
    /// Node N serves Redis clients on 127.0.0.1:(redis_port + N - 1).
    #[arg(long, default_value_t = 6380)]
    pub redis_port: u16,
    /// Start, load the sample data, check it on every node, and exit (for scripts and CI).
    #[arg(long)]
    pub check: bool,
}

const PLANETS: [(&str, &str); 8] = [
    ("mercury", r#"{"order":1,"moons":0,"radius_km":2439.7}"#),
    ("venus", r#"{"order":2,"moons":0,"radius_km":6051.8}"#),
    ("earth", r#"{"order":3,"moons":1,"radius_km":6371.0}"#),
    ("mars", r#"{"order":4,"moons":2,"radius_km":3389.5}"#),
    ("jupiter", r#"{"order":5,"moons":95,"radius_km":69911}"#),
    ("saturn", r#"{"order":6,"moons":146,"radius_km":58232}"#),
    ("uranus", r#"{"order":7,"moons":28,"radius_km":25362}"#),
    ("neptune", r#"{"order":8,"moons":16,"radius_km":24622}"#),
];

/// The sample dataset the demo loads (made up by `scripts/gen_cities.py`).
const CITIES_CSV: &str = include_str!("../../examples/data/cities.csv");
const CITIES_ROWS: u64 = 300;

struct DemoNode {
    id: u64,
    addr: String,
    child: Child,
}

fn node_args(id: u64, dir: &std::path::Path, addr: &str, seed: &str, args: &DemoArgs) -> Vec<String> {
    let mut a = vec![
        "start".into(),
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
        dir.join(format!("node{id}")).display().to_string(),
        "--listen".into(),
        addr.into(),
        "--pg-listen".into(),
        format!("127.0.0.1:{}", args.pg_port + id as u16 - 1),
        "--redis-listen".into(),
        format!("127.0.0.1:{}", args.redis_port + id as u16 - 1),
    ];
    if id == 1 {
        a.push("--init".into());
    } else {
        a.extend(["--join".into(), seed.into()]);
    }
    a
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the quorumdb binary")?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", args.base_port + i)).collect();
    let others =
        (0..3).flat_map(|i| [format!("127.0.0.1:{}", args.pg_port + i), format!("127.0.0.1:{}", args.redis_port + i)]);
    for a in addrs.iter().cloned().chain(others) {
        if std::net::TcpListener::bind(&a).is_err() {
            bail!("{a} is in use; stop what uses it or pick other ports with --base-port");
        }
    }
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("node{id}.log")))?;
        let child = Command::new(&exe)
            .args(node_args(id, &dir, addr, &addrs[0], &args))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a node")?;
        nodes.push(DemoNode { id, addr: addr.clone(), child });
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let result = demo_body(&http, &nodes, &dir, args.check).await;
    for n in &mut nodes {
        if let Some(pid) = n.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for n in &mut nodes {
        if tokio::time::timeout(Duration::from_secs(10), n.child.wait()).await.is_err() {
            let _ = n.child.kill().await;
        }
    }
    result
}

async fn status(http: &reqwest::Client, addr: &str) -> anyhow::Result<Value> {
    Ok(http.get(format!("http://{addr}/v1/status")).send().await?.error_for_status()?.json().await?)
}

async fn demo_body(
    http: &reqwest::Client,
    nodes: &[DemoNode],
    dir: &std::path::Path,
    check: bool,
) -> anyhow::Result<()> {
    println!("starting 3 nodes in {} ...", dir.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        if let Ok(s) = status(http, &nodes[0].addr).await
            && s["members"].as_array().is_some_and(|m| m.len() == 3)
            && let Some(l) = s["leader"].as_u64()
        {
            break l;
        }
        if Instant::now() > deadline {
            bail!("the cluster did not form within 60 s; see the node logs in {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Write through a follower: it forwards to the leader.
    let via = nodes.iter().find(|n| n.id != leader).context("the demo cluster has no follower")?;
    for (name, doc) in PLANETS {
        http.put(format!("http://{}/v1/kv/planet/{name}", via.addr)).body(doc).send().await?.error_for_status()?;
    }
    for i in 0..100 {
        http.put(format!("http://{}/v1/kv/counter/{i:03}", via.addr))
            .body(i.to_string())
            .send()
            .await?
            .error_for_status()?;
    }
    // SQL sample data, also through the follower; idempotent so the demo can restart on its dir.
    let sql = |addr: String, text: &'static str| {
        let http = http.clone();
        async move {
            let r = http.post(format!("http://{addr}/v1/sql")).json(&serde_json::json!({ "sql": text })).send().await?;
            let status = r.status();
            let body: Value = r.json().await?;
            anyhow::ensure!(status.is_success(), "{text}: {body}");
            anyhow::Ok(body)
        }
    };
    sql(via.addr.clone(), SAMPLE_SQL).await?;
    // A vector collection: named colours as RGB vectors (created once; upserts are idempotent).
    let colors = format!("http://{}/v1/collections/colors", via.addr);
    if http.get(&colors).send().await?.status() == reqwest::StatusCode::NOT_FOUND {
        let body = serde_json::json!({"vectors": {"size": 3, "distance": "Euclid"}});
        http.put(&colors).json(&body).send().await?.error_for_status()?;
    }
    let points: Vec<Value> = COLORS
        .iter()
        .enumerate()
        .map(|(i, (name, rgb, warm))| serde_json::json!({"id": i, "vector": rgb, "payload": {"name": name, "warm": warm}}))
        .collect();
    http.put(format!("{colors}/points"))
        .json(&serde_json::json!({ "points": points }))
        .send()
        .await?
        .error_for_status()?;
    // A table loaded from the sample CSV by the loader (`quorumdb load`'s library), again
    // through the follower; dropped first so the demo can restart on its dir.
    sql(via.addr.clone(), "DROP TABLE IF EXISTS cities").await?;
    let csv = dir.join("cities.csv");
    std::fs::write(&csv, CITIES_CSV).with_context(|| format!("writing {}", csv.display()))?;
    let mut load = quorumdb_client::load::TableLoadOptions::new(&via.addr, "cities");
    load.primary_key = Some("id".into());
    let report = quorumdb_client::load::load_table(&csv, &load).await?;
    anyhow::ensure!(
        report.rejected.is_empty() && report.loaded == CITIES_ROWS,
        "loading the sample cities: {} loaded, rejected {:?}",
        report.loaded,
        report.rejected
    );
    // Every node answers a linearizable read with the new data.
    for n in nodes {
        let v = sql(n.addr.clone(), "SELECT count(*) FROM cities").await?;
        anyhow::ensure!(v["results"][0]["rows"][0][0] == CITIES_ROWS, "node {} has cities {v}", n.id);
        let v = sql(n.addr.clone(), SAMPLE_CHECK).await?;
        anyhow::ensure!(v["results"][0]["rows"][0][0] == 9, "node {} returned {v}", n.id);
        let v =
            http.get(format!("http://{}/v1/kv/planet/earth", n.addr)).send().await?.error_for_status()?.text().await?;
        anyhow::ensure!(v.contains("\"moons\":1"), "node {} returned {v:?}", n.id);
        let v: Value = http
            .post(format!("http://{}/v1/collections/colors/search", n.addr))
            .json(&serde_json::json!({"vector": [250, 120, 10], "limit": 1}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(v["result"][0]["payload"]["name"] == "orange", "node {} returned {v}", n.id);
    }
    println!(
        "\nQuorumDB demo cluster is up: leader is node {leader}; 108 sample keys, the planets/moons tables, {CITIES_ROWS} cities loaded from CSV and a colors vector collection loaded through node {}.\n",
        via.id
    );
    for n in nodes {
        println!(
            "  node {}  http://{}  pid {}   log {}/node{}.log",
            n.id,
            n.addr,
            n.child.id().unwrap_or(0),
            dir.display(),
            n.id
        );
    }
    let a = &nodes[1].addr;
    println!("\nTry:");
    println!("  curl -s http://{a}/v1/status");
    println!("  curl -s http://{a}/v1/kv/planet/mars");
    println!(
        "  curl -s http://{a}/v1/sql -d '{{\"sql\": \"SELECT p.name, count(m.name) AS moons FROM planets p LEFT JOIN moons m ON m.planet = p.name GROUP BY p.name ORDER BY moons DESC\"}}'"
    );
    println!(
        "  curl -s http://{a}/v1/sql -d '{{\"sql\": \"UPDATE planets SET moons = moons + 1 WHERE name = $1\", \"params\": [\"mars\"]}}'"
    );
    println!(
        "  curl -s http://{a}/v1/collections/colors/search -d '{{\"vector\": [200, 30, 60], \"limit\": 3, \"filter\": {{\"must\": [{{\"key\": \"warm\", \"match\": {{\"value\": true}}}}]}}}}'"
    );
    println!("  curl -s -X PUT --data-binary 'hello' http://{a}/v1/kv/greeting");
    println!("  quorumdb load --node {a} --table cities2 --primary-key id {}", dir.join("cities.csv").display());
    println!("  curl -s 'http://{}/v1/kv/greeting?consistency=stale'", nodes[2].addr);
    println!("  curl -s 'http://{a}/v1/kv?prefix=planet/'");
    println!("  curl -s -X POST -d '{{\"to\": 2}}' http://{a}/v1/cluster/transfer-leader");
    println!("  kill -9 <leader pid>   # another node takes over within a couple of seconds");
    println!("  curl -s http://{a}/metrics");
    if check {
        println!("\n--check: the cluster works; stopping.");
        return Ok(());
    }
    println!("\nCtrl-C stops the cluster (data stays in {}).", dir.display());
    crate::node::shutdown_signal().await;
    println!("stopping ...");
    Ok(())
}

/// The SQL sample: the solar system's planets and some of their moons.
const SAMPLE_SQL: &str = "
CREATE TABLE IF NOT EXISTS planets (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, mass_earths DOUBLE PRECISION,
    radius_km INT, moons INT NOT NULL DEFAULT 0, au NUMERIC(6,3)
);
CREATE TABLE IF NOT EXISTS moons (name TEXT PRIMARY KEY, planet TEXT NOT NULL, radius_km DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS moons_planet ON moons (planet);
INSERT INTO planets VALUES
    ('mercury', 'terrestrial', 0.055, 2440, 0, 0.387),
    ('venus', 'terrestrial', 0.815, 6052, 0, 0.723),
    ('earth', 'terrestrial', 1.0, 6371, 1, 1.0),
    ('mars', 'terrestrial', 0.107, 3390, 2, 1.524),
    ('jupiter', 'gas giant', 317.8, 69911, 95, 5.203),
    ('saturn', 'gas giant', 95.2, 58232, 146, 9.537),
    ('uranus', 'ice giant', 14.5, 25362, 28, 19.19),
    ('neptune', 'ice giant', 17.1, 24622, 16, 30.07),
    ('pluto', 'dwarf', 0.0022, 1188, 5, 39.48)
ON CONFLICT (name) DO NOTHING;
INSERT INTO moons VALUES
    ('moon', 'earth', 1737.4), ('phobos', 'mars', 11.3), ('deimos', 'mars', 6.2),
    ('io', 'jupiter', 1821.6), ('europa', 'jupiter', 1560.8), ('ganymede', 'jupiter', 2634.1),
    ('callisto', 'jupiter', 2410.3), ('titan', 'saturn', 2574.7), ('enceladus', 'saturn', 252.1),
    ('titania', 'uranus', 788.4), ('triton', 'neptune', 1353.4), ('charon', 'pluto', 606.0)
ON CONFLICT (name) DO NOTHING;
";

/// The vector sample: colours as RGB vectors, with a payload.
const COLORS: [(&str, [u8; 3], bool); 12] = [
    ("red", [255, 0, 0], true),
    ("orange", [255, 128, 0], true),
    ("yellow", [255, 255, 0], true),
    ("green", [0, 160, 0], false),
    ("teal", [0, 128, 128], false),
    ("blue", [0, 0, 255], false),
    ("navy", [0, 0, 128], false),
    ("purple", [128, 0, 128], false),
    ("pink", [255, 160, 200], true),
    ("brown", [140, 80, 20], true),
    ("white", [255, 255, 255], false),
    ("black", [0, 0, 0], false),
];

const SAMPLE_CHECK: &str = "SELECT count(DISTINCT p.name) FROM planets p LEFT JOIN moons m ON m.planet = p.name";
