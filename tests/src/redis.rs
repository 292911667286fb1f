//! A real `redis-server` for a test: started on a free port in a temporary directory
//! that is removed afterwards (scripts/setup.sh installs Debian's `redis-server`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A redis-server of one test; killed, and its directory removed, when dropped.
#[derive(Debug)]
pub struct TestRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    persistent: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

impl TestRedis {
    /// A Redis without persistence: a restart loses everything.
    pub async fn start() -> TestRedis {
        Self::start_with(false).await
    }

    /// A Redis that writes every command to its append-only file before answering
    /// (`appendfsync always`): a restart, even after `kill -9`, keeps every write it
    /// acknowledged.
    pub async fn start_persistent() -> TestRedis {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> TestRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "state-sync-test-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut redis = TestRedis {
            child: None,
            port,
            dir,
            persistent,
        };
        redis.launch().await;
        redis
    }

    async fn launch(&mut self) {
        self.launch_with(&[]).await;
    }

    async fn launch_with(&mut self, extra: &[&str]) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(extra)
            .arg("--dir")
            .arg(&self.dir);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup.sh installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                // Up and done loading its file: PING answers PONG (not LOADING).
                let mut answer = [0_u8; 64];
                if stream.write_all(b"PING\r\n").await.is_ok()
                    && let Ok(n) = stream.read(&mut answer).await
                    && answer[..n].starts_with(b"+PONG")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills every subscription connection (`CLIENT KILL TYPE pubsub`): what is
    /// published until its clients subscribe again is lost to them. How many died.
    pub async fn kill_subscriptions(&self) -> i64 {
        kill_subscriptions(&self.url()).await
    }

    /// Kills it (`kill -9`): clients see their connections fail.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of this test: `nodes` primaries (no replicas) on free ports, each
/// in a temporary directory; killed, and the directories removed, when dropped.
#[derive(Debug)]
pub struct TestRedisCluster {
    nodes: Vec<TestRedis>,
}

impl TestRedisCluster {
    /// Starts the nodes and joins them into one cluster (`redis-cli --cluster
    /// create`), waiting until it serves every slot.
    pub async fn start(nodes: usize) -> TestRedisCluster {
        let mut started = Vec::new();
        for _ in 0..nodes {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "state-sync-test-redis-cluster-{port}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let mut node = TestRedis {
                child: None,
                port,
                dir,
                persistent: false,
            };
            node.launch_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .await;
            started.push(node);
        }
        let addresses: Vec<String> = started
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed with redis-server");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = TestRedisCluster { nodes: started };
        for _ in 0..400 {
            let ok = cluster.nodes.iter().all(|node| {
                Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|out| {
                        String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
                    })
            });
            if ok {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the redis cluster did not become ready");
    }

    /// The URL of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(TestRedis::url).collect()
    }
}

/// One server of a cluster in a test: its syncer on `redis`, serving on a fresh
/// loopback port.
pub struct ClusterNode {
    /// The server's syncer.
    pub syncer: state_sync_server::StateSyncer,
    /// Its `ws://` URL.
    pub url: String,
    _server: state_sync_server::Server,
}

/// Starts a server of a cluster on `redis`, after `states` created its states.
pub async fn cluster_node(
    redis: state_sync_server::Redis,
    states: impl Fn(&state_sync_server::StateSyncer),
) -> ClusterNode {
    let syncer = state_sync_server::StateSyncer::builder()
        .redis(redis)
        .build();
    states(&syncer);
    let (server, url) = crate::serve(&syncer).await;
    ClusterNode {
        syncer,
        url,
        _server: server,
    }
}

/// Creates an empty state `id` with no hooks.
pub fn plain_state(id: &str) -> impl Fn(&state_sync_server::StateSyncer) + '_ {
    move |syncer| {
        syncer
            .create_state(state_sync_server::StateOptions::new().identifier(id))
            .expect("create state");
    }
}

/// Kills every subscription connection of the Redis (node) at `url`; how many died.
pub async fn kill_subscriptions(url: &str) -> i64 {
    let mut admin = redis::Client::open(url)
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL")
}
