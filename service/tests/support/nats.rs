//! A three-node NATS JetStream cluster on loopback for the cluster tests: Debian's
//! `nats-server`, one process per node, each with its own store folder; killed when dropped.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One NATS server of the cluster.
pub struct Node {
    /// The process (None once killed).
    pub child: Option<Child>,
    /// Its client port.
    pub port: u16,
    /// Its configuration file (to start it again).
    pub config: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

/// The cluster.
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` JetStream nodes routed to each other, their files under `dir`; returns once
    /// every client port accepts connections.
    pub fn start(dir: &Path, n: usize) -> NatsCluster {
        // Held together until all are chosen, so that no two are the same.
        let held: Vec<std::net::TcpListener> = (0..2 * n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<(u16, u16)> = held
            .chunks(2)
            .map(|pair| {
                let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
                (port(&pair[0]), port(&pair[1]))
            })
            .collect();
        drop(held);
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("\"nats-route://127.0.0.1:{cluster}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster)) in ports.iter().enumerate() {
            let store = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&store).unwrap();
            let config = dir.join(format!("nats-{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\n\
                     listen: \"127.0.0.1:{client}\"\n\
                     max_payload: 8388608\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 67108864\n  max_file_store: 1073741824\n}}\n\
                     cluster {{\n  name: diptych-test\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .unwrap();
            let mut node = Node {
                child: None,
                port: *client,
                config,
                log: dir.join(format!("nats-{i}.log")),
            };
            node.start();
            nodes.push(node);
        }
        let cluster = NatsCluster { nodes };
        for node in &cluster.nodes {
            node.wait_listening();
        }
        cluster
    }

    /// The client URLs of every node, comma-separated (the `[cluster] nats_url` form).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Node {
    /// Starts (or restarts) the process.
    pub fn start(&mut self) {
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "nats-server did not start ({e}); run `make deps-apt` (Debian's nats-server)"
                )
            });
        self.child = Some(child);
    }

    /// Waits until the client port accepts connections (or panics with the log).
    pub fn wait_listening(&self) {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server on port {} did not listen:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
