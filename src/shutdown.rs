//! The process's signals, in one place: SIGTERM and SIGINT stop, SIGHUP reloads
//! (only where a reload means something: the daemon). `backfill` and the daemon
//! both listen through [`Signals`], so they stop on the same signals.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// SIGTERM, SIGINT and, for the daemon, SIGHUP as one stream.
pub struct Signals {
    term: Signal,
    int: Signal,
    /// `None` leaves SIGHUP's default (end the process) in place.
    hup: Option<Signal>,
}

pub enum Sig {
    Stop(&'static str),
    Reload,
}

impl Signals {
    /// Stop signals only.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: None,
        })
    }

    /// Stop signals, and SIGHUP as [`Sig::Reload`].
    pub fn with_reload() -> std::io::Result<Signals> {
        let mut signals = Signals::new()?;
        signals.hup = Some(signal(SignalKind::hangup())?);
        Ok(signals)
    }

    pub async fn recv(&mut self) -> Sig {
        let hup = async {
            match self.hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => Sig::Stop("SIGTERM"),
            _ = self.int.recv() => Sig::Stop("SIGINT"),
            _ = hup => Sig::Reload,
        }
    }
}

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM, after printing
/// `message` to stderr. Without signal handlers (which cannot fail on Linux in
/// practice) the token is simply never cancelled.
pub fn cancel_on_stop(message: &'static str) -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    let signals = Signals::new();
    tokio::spawn(async move {
        let Ok(mut signals) = signals else {
            return;
        };
        if let Sig::Stop(_) = signals.recv().await {
            eprintln!("{message}");
            child.cancel();
        }
    });
    token
}
