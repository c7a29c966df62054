//! Three recvault processes on one bucket behind HAProxy (TCP for SFTP and
//! FTPS, each node's passive ports routed to it, HTTP hashed by session for
//! ingest, PROXY protocol v2 to every node, the balancer's source 127.0.0.2
//! the one trusted address). One node is
//! killed with SIGKILL while a download and uploads run through the
//! balancer: the download resumes through it to the same bytes, every
//! upload the gateway saw acknowledged is archived (the killed node's once
//! it is back), and a derived file asked of every node at once is
//! rendered once. Storage is the single-threaded moto, whose conditional
//! writes are atomic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

const BALANCER: &str = "127.0.0.2";
/// Where clients reach the balancer's FTPS (control and passive ports):
/// another loopback address than the nodes' 127.0.0.1, so its passive
/// ports can be the nodes' own numbers.
const FTPS_FRONT: &str = "127.0.0.5";
/// Passive ports per node: node i has `PASV_BASE + 10 i` to `+ 9`.
const PASV_BASE: u16 = 47300;

struct Haproxy {
    child: Child,
    cfg: PathBuf,
    sftp: u16,
    ingest: u16,
    ftps: u16,
}

/// A node's ports: SFTP, ingest, FTPS control.
type Ports = (u16, u16, u16);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Haproxy {
    fn config(&self, nodes: &[Ports]) -> String {
        let servers = |pick: fn(&Ports) -> u16| {
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    format!(
                        "  server n{i} 127.0.0.1:{} check inter 300ms fall 1 rise 1 send-proxy-v2 check-send-proxy\n",
                        pick(n)
                    )
                })
                .collect::<String>()
        };
        // Each node's passive ports, routed to that node (the port the
        // client connected to).
        let passive: String = (0..nodes.len())
            .map(|i| {
                let lo = PASV_BASE + 10 * i as u16;
                format!(
                    "frontend pasv{i}\n  mode tcp\n  bind {FTPS_FRONT}:{lo}-{}\n  default_backend pasv{i}\n\
                     backend pasv{i}\n  mode tcp\n  server n{i} 127.0.0.1 send-proxy-v2\n",
                    lo + 9
                )
            })
            .collect();
        format!(
            "global\n  maxconn 512\ndefaults\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n  source {BALANCER}\n\
             frontend sftp\n  mode tcp\n  bind 127.0.0.1:{}\n  default_backend sftp\n\
             backend sftp\n  mode tcp\n  balance roundrobin\n{}\
             frontend ingest\n  mode http\n  bind 127.0.0.1:{}\n  default_backend ingest\n\
             backend ingest\n  mode http\n  balance uri depth 3\n  hash-type consistent\n{}\
             frontend ftps\n  mode tcp\n  bind {FTPS_FRONT}:{}\n  default_backend ftps\n\
             backend ftps\n  mode tcp\n  balance roundrobin\n{}{passive}",
            self.sftp,
            servers(|n| n.0),
            self.ingest,
            servers(|n| n.1),
            self.ftps,
            servers(|n| n.2),
        )
    }

    fn start(dir: &Path, nodes: &[Ports]) -> Haproxy {
        let mut h = Haproxy {
            child: Command::new("true").spawn().unwrap(),
            cfg: dir.join("haproxy.cfg"),
            sftp: free_port(),
            ingest: free_port(),
            ftps: free_port(),
        };
        h.reload(nodes);
        h
    }

    /// Writes the configuration and starts a new process that takes over
    /// from the old one (`-sf`: connections through it finish there).
    fn reload(&mut self, nodes: &[Ports]) {
        std::fs::write(&self.cfg, self.config(nodes)).unwrap();
        let old = self.child.id().to_string();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&self.cfg)
            .args(["-sf", &old])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        let mut old = std::mem::replace(&mut self.child, child);
        // A bound frontend: a connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.ingest)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(130));
            let _ = old.kill();
            let _ = old.wait();
        });
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_config(prefix: &str, i: usize) -> String {
    let lo = PASV_BASE + 10 * i as u16;
    format!(
        "[listeners]\ntrusted_proxies = [\"{BALANCER}\"]\n{}\n{}",
        ftps_toml(&format!("passive_ports = \"{lo}-{}\"", lo + 9)),
        crate::media::media_config(prefix)
    )
}

fn start_node(prefix: &str, i: usize, dir: tempfile::TempDir) -> Server {
    Server::start_on_in(s3_single_threaded(), dir, &node_config(prefix, i))
}

/// An FTPS download through the balancer (curl, EPSV: the data connection
/// goes to the balancer's address too) into `out`.
fn ftps_get(lb: &Haproxy, remote: &str, out: &Path) -> Output {
    // The test certificate names localhost: resolve it to the balancer.
    let resolve = format!("localhost:{}:{FTPS_FRONT}", lb.ftps);
    Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--cacert"])
        .arg(&ftps_cert().0)
        .args(["--user", &format!("qa:{}", crate::media::PW)])
        .args(["--resolve", &resolve, "-o"])
        .arg(out)
        .arg(format!("ftp://localhost:{}{remote}", lb.ftps))
        .output()
        .unwrap()
}

fn push(url: &str, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recvault"))
        .arg("push")
        .arg(dir)
        .args(["--url", url, "--token", crate::media::TOKEN, "--wait", "60"])
        .output()
        .unwrap()
}

fn logins(s: &Server) -> usize {
    s.audit()
        .lines()
        .filter(|l| l.contains("\"event\":\"login\"") && l.contains("\"user\":\"qa\""))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_haproxy_lose_nothing_when_one_is_killed_and_render_once() {
    let prefix = unique_prefix("nodes");
    let store = s3_single_threaded().store().await;
    // A 24 MiB archive for the download.
    let big = pseudo_random(24 << 20, 91);
    seed(
        store.as_ref(),
        &format!("{prefix}acme/"),
        "big",
        "2026-11-23T08:00:00Z",
        "2026-11-23T08:30:00Z",
        big.clone(),
    )
    .await;
    let mut nodes: Vec<Option<Server>> = (0..3)
        .map(|i| Some(start_node(&prefix, i, tempfile::tempdir().unwrap())))
        .collect();
    let ports = |nodes: &[Option<Server>]| -> Vec<Ports> {
        nodes
            .iter()
            .map(|n| {
                n.as_ref()
                    .map_or((1, 1, 1), |n| (n.port, n.ingest_port, n.ftps_port))
            })
            .collect()
    };
    let work = tempfile::tempdir().unwrap();
    let mut lb = Haproxy::start(work.path(), &ports(&nodes));
    let ingest_url = format!("http://127.0.0.1:{}", lb.ingest);

    // A slow download through the balancer (2.5 MB/s: about 10 s).
    let before: Vec<usize> = nodes.iter().map(|n| logins(n.as_ref().unwrap())).collect();
    let (lb_sftp, cwd) = (lb.sftp, work.path().to_path_buf());
    let download = std::thread::spawn(move || {
        sftp_batch_with(
            lb_sftp,
            "qa",
            client_key("qa"),
            "get /2026/11/23/big/big.tar.gz big.part\n",
            &cwd,
            &["-l", "20000"],
        )
    });
    // Once a fifth of the file is through, the node serving it is killed.
    let part = work.path().join("big.part");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < (big.len() / 5) as u64 {
        if Instant::now() > deadline || download.is_finished() {
            let logs: Vec<String> = nodes.iter().flatten().map(|n| n.log()).collect();
            panic!(
                "the download did not start: {}\n{}",
                download.join().map(|o| text(&o)).unwrap_or_default(),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Twelve calls pushed through the balancer; the node is killed while they run.
    let calls: Vec<(String, PathBuf)> = (0..12)
        .map(|i| {
            let id = format!("node-call-{i}");
            let dir = crate::media::media_session(work.path(), &id);
            (id, dir)
        })
        .collect();
    let pushes: Vec<_> = calls
        .iter()
        .map(|(_, dir)| {
            let (url, dir) = (ingest_url.clone(), dir.clone());
            std::thread::spawn(move || push(&url, &dir))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let serving = (0..3)
        .find(|&i| logins(nodes[i].as_ref().unwrap()) > before[i])
        .expect("a node logged the download's login");
    let killed_dir = nodes[serving].take().unwrap().kill9();
    let cut = download.join().unwrap();
    assert!(!cut.status.success(), "the download outlived its node");
    let got_before = std::fs::metadata(&part).unwrap().len();
    assert!(got_before < big.len() as u64);
    // The client reconnects through the balancer and resumes.
    let resumed = sftp_batch(
        lb.sftp,
        "qa",
        client_key("qa"),
        "reget /2026/11/23/big/big.tar.gz big.part\n",
        work.path(),
    );
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(std::fs::read(&part).unwrap() == big, "resumed bytes differ");

    // The gateway resends what was not acknowledged.
    let mut acknowledged = Vec::new();
    for ((id, dir), p) in calls.iter().zip(pushes) {
        let out = p.join().unwrap();
        if out.status.success() {
            acknowledged.push(id.clone());
        } else {
            let again = push(&ingest_url, dir);
            assert!(again.status.success(), "{id} resent: {}", text(&again));
        }
    }
    eprintln!(
        "node {serving} killed after {got_before} bytes; {} of {} pushes went through, the others were resent",
        acknowledged.len(),
        calls.len()
    );

    // The killed node comes back on its spool; the balancer is told.
    nodes[serving] = Some(start_node(&prefix, serving, killed_dir));
    lb.reload(&ports(&nodes));
    // Every call is archived, and listed by every node.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut all = true;
        for n in nodes.iter().flatten() {
            let out = sftp_batch(
                n.port,
                "qa",
                client_key("qa"),
                "ls /2026/11/23\n",
                work.path(),
            );
            let listing = String::from_utf8_lossy(&out.stdout).to_string();
            all &= calls.iter().all(|(id, _)| listing.contains(id.as_str()));
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "not every call was archived");
        std::thread::sleep(Duration::from_millis(500));
    }

    // FTPS through the balancer: three downloads, one per node in turn
    // (control and passive data both through it), each byte-exact.
    for i in 0..3 {
        let out = work.path().join(format!("ftps-{i}"));
        let got = ftps_get(&lb, "/2026/11/23/big/big.tar.gz", &out);
        assert!(
            got.status.success(),
            "FTPS through the balancer: {}",
            text(&got)
        );
        assert!(std::fs::read(&out).unwrap() == big, "FTPS bytes differ");
    }
    let served_ftps = nodes
        .iter()
        .flatten()
        .filter(|n| {
            n.audit().lines().any(|l| {
                l.contains("\"event\":\"download\"") && l.contains("\"protocol\":\"ftps\"")
            })
        })
        .count();
    assert!(
        served_ftps >= 2,
        "{served_ftps} nodes served the FTPS downloads"
    );

    // Every node asked for one call's MP3 at once: one render.
    let remote = "/2026/11/23/node-call-0/node-call-0.mp3";
    let readers: Vec<_> = nodes
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, n)| {
            let (port, cwd, remote) = (n.port, work.path().to_path_buf(), remote.to_string());
            std::thread::spawn(move || {
                let out = sftp_batch(
                    port,
                    "qa",
                    client_key("qa"),
                    &format!("get {remote} m{i}.mp3\n"),
                    &cwd,
                );
                assert!(out.status.success(), "{}", text(&out));
                std::fs::read(cwd.join(format!("m{i}.mp3"))).unwrap()
            })
        })
        .collect();
    let bodies: Vec<Vec<u8>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(bodies.iter().all(|b| !b.is_empty() && *b == bodies[0]));
    let renders: usize = nodes
        .iter()
        .flatten()
        .map(|n| n.log().matches("render started").count())
        .sum();
    assert_eq!(renders, 1, "renders across the three nodes");
    // The balancer's connections were the clients' to every node.
    for n in nodes.iter().flatten() {
        let log = n.log();
        assert!(
            !log.contains("refused a connection from a trusted balancer")
                && !log.contains("refused a data connection"),
            "{log}"
        );
    }
}
