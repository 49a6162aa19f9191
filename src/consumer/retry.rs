//! The one retry-while-refused loop: whoever hands data to a [`Consumer`]
//! from its own task (a receiver's sender, a shard reader, the batcher)
//! offers it until it is taken, backing off while it is refused, and stops
//! when told to.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ack::Acks;
use super::contract::{ConsumeError, Refused};

/// How a retry-while-refused loop waits between offers.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// Waits double up to this.
    pub max: Duration,
    /// A refusal's `retry_after` is waited for, up to this (zero: ignored).
    pub retry_after_cap: Duration,
}

/// How offering data ended.
#[derive(Debug)]
pub enum Offered<T: std::fmt::Debug> {
    /// The consumer took it.
    Taken,
    /// The consumer failed it for good (reason given; it has dealt with the acks).
    Failed(String),
    /// `stop` fired while it was refused: the last refusal, with the data and
    /// its acks untouched, for the caller to count and mark.
    Stopped(Box<Refused<T>>),
}

/// Offers `data` and its `acks` through `offer` until taken or failed,
/// waiting `backoff` after each refusal (`refused` sees each one), until
/// `stop` fires.
pub async fn offer_until_taken<T, F, Fut>(
    data: T,
    acks: Acks,
    backoff: Backoff,
    stop: &CancellationToken,
    mut offer: F,
    mut refused: impl FnMut(&Refused<T>),
) -> Offered<T>
where
    T: std::fmt::Debug,
    F: FnMut(T, Acks) -> Fut,
    Fut: Future<Output = Result<(), ConsumeError<T>>>,
{
    let (mut data, mut acks) = (data, acks);
    let mut wait = backoff.initial;
    loop {
        let r = match offer(data, acks).await {
            Ok(()) => return Offered::Taken,
            Err(ConsumeError::Failed(reason)) => return Offered::Failed(reason),
            Err(ConsumeError::Refused(r)) => r,
        };
        refused(&r);
        if stop.is_cancelled() {
            return Offered::Stopped(r);
        }
        let pause = wait.max(r.retry_after.min(backoff.retry_after_cap));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return Offered::Stopped(r),
        }
        (data, acks) = (r.data, r.acks);
        wait = (wait * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const QUICK: Backoff = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(4),
        retry_after_cap: Duration::ZERO,
    };

    fn refuse(data: u32, acks: Acks) -> ConsumeError<u32> {
        ConsumeError::refused("full", Duration::from_secs(60), data, acks)
    }

    #[tokio::test]
    async fn retries_refusals_until_taken_and_hands_back_at_stop() {
        let offers = AtomicUsize::new(0);
        let seen = AtomicUsize::new(0);
        let stop = CancellationToken::new();
        // Refused twice, then taken; the data offered is always the same.
        let out = offer_until_taken(
            7u32,
            Acks::none(),
            QUICK,
            &stop,
            |d, a| {
                let n = offers.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert_eq!(d, 7);
                    if n < 2 {
                        Err(refuse(d, a))
                    } else {
                        Ok(())
                    }
                }
            },
            |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
        assert!(matches!(out, Offered::Taken));
        assert_eq!(offers.load(Ordering::SeqCst), 3);
        assert_eq!(seen.load(Ordering::SeqCst), 2);

        // Always refused: once `stop` fires the data comes back untouched.
        stop.cancel();
        let out = offer_until_taken(
            9u32,
            Acks::none(),
            QUICK,
            &stop,
            |d, a| async move { Err(refuse(d, a)) },
            |_| {},
        )
        .await;
        match out {
            Offered::Stopped(r) => assert_eq!(r.data, 9),
            other => panic!("{other:?}"),
        }

        // A failure ends at once.
        let stop = CancellationToken::new();
        let out = offer_until_taken(
            1u32,
            Acks::none(),
            QUICK,
            &stop,
            |_, _| async { Err(ConsumeError::Failed("bad".into())) },
            |_| {},
        )
        .await;
        assert!(matches!(out, Offered::Failed(r) if r == "bad"));
    }
}
