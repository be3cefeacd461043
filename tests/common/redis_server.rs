//! A real `redis-server` for tests: its own free port and temp dir, no
//! persistence, stopped on drop. `restart` brings it back on the same port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, ok};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Serves TLS only, with this certificate and key.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = ok(tempfile::tempdir(), "tempdir");
        let mut s = Self {
            child: None,
            port: free_port(),
            dir,
            tls: None,
        };
        s.spawn().await;
        s
    }

    /// A server that speaks TLS only (`rediss://`), with `leaf`'s certificate.
    pub async fn start_tls(leaf: &super::pki::Leaf) -> Self {
        let dir = ok(tempfile::tempdir(), "tempdir");
        let files = leaf.write(dir.path(), "redis");
        let mut s = Self {
            child: None,
            port: free_port(),
            dir,
            tls: Some(files),
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = ok(
            cmd.args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn(),
            "start redis-server (apt-get install redis-server)",
        );
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.tls.is_some() {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    return;
                }
            } else if let Ok(mut c) = self.client().get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        ok(redis::Client::open(self.url()), "redis client")
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        ok(
            self.client().get_multiplexed_async_connection().await,
            "connect to redis",
        )
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
