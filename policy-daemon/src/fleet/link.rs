//! The task that keeps the link to Redis: subscribe, resync, publish the
//! outbox, apply received messages, reconnect with backoff.

use std::{sync::Arc, time::Duration};

use futures_util::{FutureExt as _, StreamExt as _};
use redis::{AsyncCommands as _, aio::MultiplexedConnection};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::{
    Fleet, FleetError, FleetTarget, Message, OUTBOX_BACKEND, Op, now_ms,
    wire::{self, Rejected},
};
use crate::{
    bans::{BanLength, BanRequest, BanScope, Source, parse_target},
    clock::unix_now,
};

/// Longest a connect or command may take before the link counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages published per pipeline.
const PUBLISH_CHUNK: usize = 2000;
/// Received messages applied per manager call.
const APPLY_CHUNK: usize = 5000;
/// Expired entries are purged, and the link checked, this often.
const HOUSEKEEPING: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Keeps the link until `stopped`. `ready` fires once the first resync is
/// done or the first connection attempt failed (local banning goes on
/// without Redis).
pub async fn run(
    fleet: Arc<Fleet>,
    target: Arc<dyn FleetTarget>,
    mut stopped: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_MIN;
    loop {
        let result = tokio::select! {
            result = session(&fleet, &target, &mut ready) => result,
            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => return,
        };
        fleet.health.set_connected(false);
        if let Err(error) = result {
            if fleet.health.last_error.lock().map_or(true, |e| e.is_none()) {
                warn!("{error}; bans are queued until Redis is back");
            } else {
                debug!("{error}");
            }
            fleet.health.set_error(Some(error.to_string()));
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if fleet.health.connected() {
            backoff = BACKOFF_MIN;
        }
    }
}

async fn timed<T>(
    fleet: &Fleet,
    operation: &'static str,
    key: &str,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(FleetError::Redis {
            url: fleet.config.redacted_url(),
            operation,
            key: key.to_owned(),
            source,
        }),
        Err(_) => Err(FleetError::Timeout {
            url: fleet.config.redacted_url(),
            operation,
            after: COMMAND_TIMEOUT,
        }),
    }
}

/// One connection's life: returns when it breaks.
async fn session(
    fleet: &Arc<Fleet>,
    target: &Arc<dyn FleetTarget>,
    ready: &mut Option<oneshot::Sender<()>>,
) -> Result<(), FleetError> {
    let url = fleet.config.redacted_url();
    let channel = fleet.config.channel.clone();
    // rediss:// URLs use rustls; it needs its crypto provider chosen once
    // per process (an error only means it was chosen already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client =
        redis::Client::open(fleet.config.redis.as_str()).map_err(|source| FleetError::Url {
            url: url.clone(),
            source,
        })?;
    let mut conn = timed(
        fleet,
        "connecting",
        "",
        client.get_multiplexed_async_connection(),
    )
    .await?;
    let mut pubsub = timed(
        fleet,
        "connecting for pub/sub",
        "",
        client.get_async_pubsub(),
    )
    .await?;
    // Subscribed before the resync, so nothing published meanwhile is missed.
    timed(fleet, "SUBSCRIBE", &channel, pubsub.subscribe(&channel)).await?;
    let resynced = resync(fleet, target, &mut conn).await?;
    fleet.health.set_connected(true);
    fleet.health.set_error(None);
    info!(redis = %url, node = %fleet.node, resynced, "fleet: connected and resynced");
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    flush(fleet, &mut conn).await?;
    let mut messages = pubsub.on_message();
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.tick().await;
    loop {
        tokio::select! {
            first = messages.next() => {
                let Some(first) = first else {
                    return Err(FleetError::Disconnected { url, channel });
                };
                let mut batch = vec![first];
                while batch.len() < APPLY_CHUNK {
                    match messages.next().now_or_never() {
                        Some(Some(message)) => batch.push(message),
                        Some(None) => return Err(FleetError::Disconnected { url, channel }),
                        None => break,
                    }
                }
                let parsed: Vec<Message> = batch
                    .iter()
                    .filter_map(|m| fleet.read(m.get_payload_bytes()))
                    .collect();
                apply(fleet, target, parsed).await;
            }
            () = fleet.wake.notified() => flush(fleet, &mut conn).await?,
            _ = housekeeping.tick() => {
                purge(fleet, &mut conn).await?;
                flush(fleet, &mut conn).await?;
            }
        }
    }
}

/// Removes expired entries from the sorted set and the hash.
async fn purge(fleet: &Fleet, conn: &mut MultiplexedConnection) -> Result<(), FleetError> {
    let bans = fleet.config.bans_key();
    let details = fleet.config.details_key();
    let now = unix_now();
    let expired: Vec<String> = timed(
        fleet,
        "ZRANGEBYSCORE",
        &bans,
        conn.zrangebyscore(&bans, "-inf", format!("({now}")),
    )
    .await?;
    for chunk in expired.chunks(PUBLISH_CHUNK) {
        let mut pipe = redis::pipe();
        pipe.atomic().hdel(&details, chunk).ignore();
        pipe.zrem(&bans, chunk).ignore();
        timed(
            fleet,
            "HDEL/ZREM expired",
            &details,
            pipe.query_async::<()>(conn),
        )
        .await?;
    }
    Ok(())
}

/// Applies every active ban of other nodes; returns how many were read.
async fn resync(
    fleet: &Arc<Fleet>,
    target: &Arc<dyn FleetTarget>,
    conn: &mut MultiplexedConnection,
) -> Result<usize, FleetError> {
    purge(fleet, conn).await?;
    if !fleet.config.accept {
        return Ok(0);
    }
    let bans = fleet.config.bans_key();
    let details = fleet.config.details_key();
    let targets: Vec<String> = timed(
        fleet,
        "ZRANGEBYSCORE",
        &bans,
        conn.zrangebyscore(&bans, format!("({}", unix_now()), "+inf"),
    )
    .await?;
    let mut total = 0;
    for chunk in targets.chunks(APPLY_CHUNK) {
        let values: Vec<Option<String>> = timed(
            fleet,
            "HMGET",
            &details,
            redis::cmd("HMGET")
                .arg(&details)
                .arg(chunk)
                .query_async(conn),
        )
        .await?;
        let messages: Vec<Message> = values
            .into_iter()
            .flatten()
            .filter_map(|json| fleet.read(json.as_bytes()))
            .collect();
        total += messages.len();
        apply_bans(fleet, target, messages).await;
    }
    Ok(total)
}

/// Applies received messages in order, runs of bans in one call.
async fn apply(fleet: &Arc<Fleet>, target: &Arc<dyn FleetTarget>, messages: Vec<Message>) {
    let messages: Vec<Message> = messages
        .into_iter()
        .filter(|m| m.node != fleet.node)
        .collect();
    let Some(latest) = messages.iter().map(|m| m.at).max() else {
        return;
    };
    fleet.health.record_received(messages.len() as u64, latest);
    if !fleet.config.accept {
        return;
    }
    let mut run: Vec<Message> = Vec::new();
    for message in messages {
        match message.op {
            Op::Ban => run.push(message),
            Op::Unban => {
                apply_bans(fleet, target, std::mem::take(&mut run)).await;
                let Ok(net) = parse_target(&message.target) else {
                    fleet
                        .health
                        .record_rejected(Rejected::Malformed, 1, &message.target);
                    continue;
                };
                let target = Arc::clone(target);
                let _ = tokio::task::spawn_blocking(move || target.unban_remote(net)).await;
            }
        }
    }
    apply_bans(fleet, target, run).await;
}

async fn apply_bans(fleet: &Arc<Fleet>, target: &Arc<dyn FleetTarget>, messages: Vec<Message>) {
    let now = unix_now();
    // Another node decides how long a ban lasts here only up to the cap.
    let latest = fleet
        .config
        .max_bantime
        .0
        .map_or(i64::MAX, |cap| crate::clock::expiry_after(now, cap));
    let mut requests = Vec::with_capacity(messages.len());
    for m in messages {
        if m.op != Op::Ban || m.node == fleet.node || m.expires_at.is_some_and(|at| at <= now) {
            continue;
        }
        let Ok(net) = parse_target(&m.target) else {
            fleet
                .health
                .record_rejected(Rejected::Malformed, 1, &m.target);
            continue;
        };
        requests.push(BanRequest::new(
            net,
            BanLength::Until(m.expires_at.unwrap_or(i64::MAX).min(latest)),
            Source::Fleet,
            &format!("{} (from {}, {})", m.reason, m.node, m.source),
            &BanScope::from_setting(m.ports.as_deref()),
        ));
    }
    if requests.is_empty() {
        return;
    }
    let count = requests.len();
    let example = requests
        .first()
        .map(|r| crate::bans::target_to_string(&r.target))
        .unwrap_or_default();
    let target = Arc::clone(target);
    let accepted = tokio::task::spawn_blocking(move || target.ban_remote(requests))
        .await
        .unwrap_or_default();
    fleet.health.record_rejected(
        Rejected::Refused,
        count.saturating_sub(accepted) as u64,
        &example,
    );
    debug!(count, accepted, "fleet: bans applied");
}

/// Publishes the outbox, oldest first, and removes what Redis took.
async fn flush(fleet: &Arc<Fleet>, conn: &mut MultiplexedConnection) -> Result<(), FleetError> {
    loop {
        let store = Arc::clone(&fleet.store);
        let pending = tokio::task::spawn_blocking(move || store.outbox_pending(OUTBOX_BACKEND))
            .await
            .unwrap_or_else(|_| Ok(Vec::new()))?;
        if pending.is_empty() {
            fleet.health.set_queue_depth(0);
            return Ok(());
        }
        let bans = fleet.config.bans_key();
        let details = fleet.config.details_key();
        for chunk in pending.chunks(PUBLISH_CHUNK) {
            let mut pipe = redis::pipe();
            let mut ids = Vec::with_capacity(chunk.len());
            for row in chunk {
                ids.push(row.id);
                let Ok(message) = serde_json::from_str::<Message>(&row.target) else {
                    warn!(
                        id = row.id,
                        "fleet: an unreadable queued message was dropped"
                    );
                    continue;
                };
                // Signed as it leaves, with the secret in force now.
                let text = wire::encode(&message, fleet.secret.as_ref());
                match message.op {
                    Op::Ban => {
                        let expiry = message
                            .expires_at
                            .map_or_else(|| "+inf".to_owned(), |at| at.to_string());
                        pipe.cmd("ZADD")
                            .arg(&bans)
                            .arg(expiry)
                            .arg(&message.target)
                            .ignore();
                        pipe.hset(&details, &message.target, &text).ignore();
                    }
                    Op::Unban => {
                        pipe.zrem(&bans, &message.target).ignore();
                        pipe.hdel(&details, &message.target).ignore();
                    }
                }
                pipe.publish(&fleet.config.channel, &text).ignore();
            }
            timed(
                fleet,
                "publishing",
                &fleet.config.channel,
                pipe.query_async::<()>(conn),
            )
            .await?;
            let store = Arc::clone(&fleet.store);
            let n = ids.len() as u64;
            tokio::task::spawn_blocking(move || store.outbox_remove_many(&ids))
                .await
                .unwrap_or(Ok(()))?;
            fleet.health.record_published(n);
            fleet
                .health
                .set_queue_depth(fleet.health.queue_depth().saturating_sub(n));
        }
        debug!(
            published = pending.len(),
            at = now_ms(),
            "fleet: outbox published"
        );
    }
}
