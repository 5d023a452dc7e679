//! One policy connection: its requests read and answered one after the
//! other, idle and busy as [`Slot`] knows them.
//!
//! Idle is waiting for the first byte of a request; busy lasts from that
//! byte until the answer is written. Only an idle connection is closed
//! for shutdown or to admit another; a busy one finishes its request.

use std::{
    fmt::Write as _,
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::atomic::Ordering,
    task::Poll,
    time::Instant,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    sync::watch,
    time::Sleep,
};
use tracing::{debug, warn};

use super::{
    codec::{Decoder, Request, encode_reply},
    service::Service,
};
use crate::listen::Slot;

/// Answers to pipelined requests are held back for one write up to this
/// size, so a peer that sends many and reads none cannot grow it.
const MAX_BATCHED_REPLY: usize = 64 * 1024;

/// Counts and logs (rate-limited) the attributes left out of `request`.
fn report_bad_attributes(service: &Service, peer: &str, request: &Request) {
    let bad = request.bad_attributes();
    if bad.is_empty() {
        return;
    }
    service.stats.bad_attributes.fetch_add(1, Ordering::Relaxed);
    let Some(held_back) = service.warnings.bad_attributes.check() else {
        return;
    };
    let mut left_out = String::new();
    for (i, attribute) in bad.iter().enumerate() {
        let separator = if i == 0 { "" } else { "; " };
        let _ = write!(
            left_out,
            "{separator}line {} \"{}\": {}",
            attribute.line, attribute.name, attribute.problem
        );
    }
    warn!(
        %peer,
        %left_out,
        held_back,
        "policy request with unusable attributes: answered without them"
    );
}

/// Serves the requests of one connection, one after the other, in `slot`.
///
/// Requests that arrived together (Postfix does not pipeline, but a peer
/// may) are answered with one write. One timer serves the connection's
/// whole life: it is moved to each new deadline instead of being made
/// anew, which costs nothing while the deadline only moves later.
pub(super) async fn serve_connection<S>(
    stream: S,
    peer: &str,
    service: &Service,
    stopped: watch::Receiver<bool>,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop = stopped.clone();
    let mut connection = Connection {
        stream,
        peer,
        service,
        stopped,
        stop: Box::pin(async move {
            let _ = stop.changed().await;
        }),
        slot,
        buffer: Vec::with_capacity(4096),
        decoder: Decoder::new(service.limits),
        deadline: Box::pin(tokio::time::sleep(service.idle_timeout)),
    };
    let mut reply: Vec<u8> = Vec::with_capacity(256);
    // Looked up once per connection, not per request: Postfix keeps its
    // policy connections open for many requests.
    let requests = metrics::counter!(crate::metrics::POLICY_REQUESTS);
    let latency = metrics::histogram!(crate::metrics::POLICY_LATENCY);
    let mut engine = None;
    while let Some(request) = connection.next_request().await {
        report_bad_attributes(service, peer, &request);
        service.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let deadline = started + service.request_timeout;
        let decision = service
            .current_engine(&mut engine)
            .decide(&request, deadline)
            .await;
        requests.increment(1);
        latency.record(started.elapsed().as_secs_f64());
        encode_reply(&decision.action, &mut reply);
        connection.decoder.recycle(request);
        if reply.len() < MAX_BATCHED_REPLY
            && connection
                .decoder
                .complete_request_buffered(&connection.buffer)
        {
            continue;
        }
        if !connection.write(&reply).await {
            return;
        }
        reply.clear();
    }
    // Answers owed before a broken request or the peer's close.
    if !reply.is_empty() {
        connection.write(&reply).await;
    }
}

/// One connection's state between requests.
struct Connection<'a, S> {
    stream: S,
    peer: &'a str,
    service: &'a Service,
    /// Whether the server stops: looked at before each idle wait.
    stopped: watch::Receiver<bool>,
    /// Resolves once the server stops or is gone. Made once for the
    /// connection: its waiter stays registered between requests instead
    /// of being added and removed under the watch's lock for each.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    slot: Slot,
    /// Bytes read and not yet taken by the decoder.
    buffer: Vec<u8>,
    decoder: Decoder,
    /// The idle or request deadline, whichever applies.
    deadline: Pin<Box<Sleep>>,
}

impl<S: AsyncWrite + Unpin> Connection<'_, S> {
    /// Writes `reply` within `request_timeout`; `false` when the
    /// connection is to be closed.
    async fn write(&mut self, reply: &[u8]) -> bool {
        let peer = self.peer;
        let mut writing = pin!(self.stream.write_all(reply));
        // Almost always done at once: the timer is only moved for a peer
        // that does not read.
        let written = match poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await {
            Poll::Ready(written) => Some(written),
            Poll::Pending => {
                self.deadline
                    .as_mut()
                    .reset((Instant::now() + self.service.request_timeout).into());
                tokio::select! {
                    biased;
                    written = &mut writing => Some(written),
                    () = self.deadline.as_mut() => None,
                }
            }
        };
        match written {
            Some(Ok(())) => true,
            Some(Err(error)) => {
                debug!(%peer, %error, "writing a policy answer failed");
                false
            }
            None => {
                warn!(%peer, "the client does not read its answers; closing the connection");
                false
            }
        }
    }
}

impl<S: AsyncRead + Unpin> Connection<'_, S> {
    /// Reads until the next complete request. `None`: the connection is
    /// to be closed (the peer left, broke the framing or stalled, it was
    /// idle too long or closed to admit another, or the server stops).
    async fn next_request(&mut self) -> Option<Request> {
        let (peer, service) = (self.peer, self.service);
        let mut started: Option<Instant> = None;
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(request)) => return Some(request),
                Ok(None) => {}
                Err(reason) => {
                    service.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = service.warnings.malformed.check() {
                        warn!(%peer, %reason, held_back, "malformed policy request; closing the connection");
                    }
                    return None;
                }
            }
            let in_request = self.decoder.in_request(&self.buffer);
            let until = if in_request {
                *started.get_or_insert_with(Instant::now) + service.request_timeout
            } else {
                // Changed: the server stops; an error: it is gone.
                if !matches!(self.stopped.has_changed(), Ok(false)) {
                    return None;
                }
                let now = Instant::now();
                self.slot.idle_at(now);
                now + service.idle_timeout
            };
            self.deadline.as_mut().reset(until.into());
            self.buffer.reserve(4096);
            let Self {
                stream,
                buffer,
                deadline,
                stop,
                slot,
                ..
            } = self;
            let read = if in_request {
                tokio::select! {
                    biased;
                    read = stream.read_buf(buffer) => Some(read),
                    () = deadline.as_mut() => None,
                }
            } else {
                tokio::select! {
                    biased;
                    read = stream.read_buf(buffer) => Some(read),
                    () = deadline.as_mut() => None,
                    () = stop.as_mut() => return None,
                    () = slot.closed() => {
                        debug!(%peer, "idle policy connection closed to admit a new one");
                        return None;
                    }
                }
            };
            match read {
                Some(Ok(0)) => {
                    if in_request && let Some(held_back) = service.warnings.malformed.check() {
                        warn!(%peer, held_back, "connection closed in the middle of a policy request");
                    }
                    return None;
                }
                Some(Ok(_)) => {
                    if !in_request && !self.slot.busy() {
                        debug!(%peer, "idle policy connection closed to admit a new one");
                        return None;
                    }
                }
                Some(Err(error)) => {
                    debug!(%peer, %error, "reading a policy request failed");
                    return None;
                }
                None if in_request => {
                    service.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = service.warnings.malformed.check() {
                        warn!(
                            %peer,
                            timeout = ?service.request_timeout,
                            held_back,
                            "policy request not complete in time; closing the connection"
                        );
                    }
                    return None;
                }
                None => {
                    debug!(%peer, "idle policy connection closed");
                    return None;
                }
            }
        }
    }
}
