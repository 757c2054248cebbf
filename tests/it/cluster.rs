//! Starts real `minietcd` processes: a cluster of N members on reserved ports, each with its
//! own data dir under one temp dir; every process is killed when the cluster is dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, minietcd_bin, port_open, wait_until, ChildGuard, Port};

/// One member's fixed facts (they survive a restart).
pub struct Member {
    pub name: String,
    pub client: Port,
    pub peer: Port,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub proc: Option<ChildGuard>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client.port)
    }
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client.port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer.port)
    }
}

/// A running minietcd cluster.
pub struct MiniCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub extra_args: Vec<String>,
}

impl MiniCluster {
    /// Starts `n` members and waits until every client port answers.
    pub fn start(n: usize) -> MiniCluster {
        Self::start_with(n, &[])
    }

    /// Like [`MiniCluster::start`] with extra flags for every member.
    pub fn start_with(n: usize, extra: &[&str]) -> MiniCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data_dir: dir.path().join(format!("{name}.minietcd")),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client: free_port(),
                    peer: free_port(),
                    proc: None,
                }
            })
            .collect();
        let mut c = MiniCluster {
            dir,
            members,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        c
    }

    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The command line of member `i`.
    pub fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let mut cmd = Command::new(minietcd_bin());
        cmd.args([
            "--name",
            &m.name,
            "--data-dir",
            m.data_dir.to_str().expect("utf-8 path"),
            "--listen-client-urls",
            &m.client_url(),
            "--advertise-client-urls",
            &m.client_url(),
            "--listen-peer-urls",
            &m.peer_url(),
            "--initial-advertise-peer-urls",
            &m.peer_url(),
            "--initial-cluster",
            &self.initial_cluster(),
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]);
        cmd.args(&self.extra_args);
        cmd
    }

    /// Starts member `i` (its log appended to `<name>.log`).
    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.members[i].log)
            .expect("open log");
        let mut cmd = self.command(i);
        cmd.stdout(Stdio::null())
            .stderr(log)
            ;
        let name = self.members[i].name.clone();
        self.members[i].proc = Some(ChildGuard::spawn(&name, &mut cmd));
    }

    /// Waits until member `i` accepts client connections; panics with its log if it exits.
    pub fn wait_ready(&mut self, i: usize) {
        let port = self.members[i].client.port;
        let name = self.members[i].name.clone();
        let log = self.members[i].log.clone();
        wait_until(&format!("{name} to listen"), Duration::from_secs(30), || {
            if let Some(p) = self.members[i].proc.as_mut() {
                if let Some(status) = p.try_wait() {
                    panic!(
                        "{name} exited with {status}; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            port_open(port).then_some(())
        });
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Restarts member `i` from its data dir and waits until it listens.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url()).collect()
    }

    /// The log of member `i`, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }
}
