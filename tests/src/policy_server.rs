//! An in-process policy server on an ephemeral port, for tests that drive
//! the policy engine over its real protocol without a daemon: it stops
//! with its runtime.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use spamwall::{
    config::Config,
    policy::{Engine, ListenAddr, Listener, PolicyStats, Service, client, serve},
};

pub struct PolicyServer {
    pub addr: ListenAddr,
    pub stats: Arc<PolicyStats>,
    _runtime: tokio::runtime::Runtime,
}

impl PolicyServer {
    /// Starts the `[policy]` section of `toml` (its first `listen`).
    ///
    /// # Panics
    /// When the configuration is refused or the server cannot start.
    pub fn start(toml: &str) -> Self {
        let config = Config::parse(toml)
            .unwrap_or_else(|e| panic!("test config: {e}\n{toml}"))
            .policy;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let stats = Arc::new(PolicyStats::default());
        let addr = runtime.block_on(async {
            let engine = Engine::new(&config, None, Arc::clone(&stats)).expect("the policy engine");
            let listener = Listener::bind(&config.listen[0], 0o666)
                .await
                .expect("binding the policy listener");
            let addr = listener.local_addr().expect("the listener's address");
            let service = Arc::new(Service::new(engine, &config, Arc::clone(&stats)));
            tokio::spawn(serve(listener, service, std::future::pending()));
            addr
        });
        Self {
            addr,
            stats,
            _runtime: runtime,
        }
    }

    /// One request; the answer line and how long it took.
    ///
    /// # Panics
    /// When the server gives no answer within ten seconds.
    pub fn ask(&self, attributes: &[(&str, &str)]) -> (String, Duration) {
        let attributes: Vec<(String, String)> = attributes
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let started = Instant::now();
        let answer = client::query(&self.addr, &attributes, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("query {attributes:?}: {e}"));
        (answer, started.elapsed())
    }
}
