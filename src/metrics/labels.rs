//! Label values of the metric families whose values are fixed, as enums, and
//! a counter per value picked by the enum ([`Counters`]), never by an index.

use std::marker::PhantomData;
use std::ops::Index;

use prometheus::{IntCounter, IntCounterVec};

/// An enum of label values: every value, in order, and its text.
pub trait Label: Copy + 'static {
    const ALL: &'static [Self];
    fn label(self) -> &'static str;
    fn index(self) -> usize;
}

/// One handle (a counter, a histogram, a nested [`ByLabel`]) per value of
/// `K`, picked by the enum.
#[derive(Debug, Clone)]
pub struct ByLabel<K, T> {
    by: Vec<T>,
    kind: PhantomData<fn(K)>,
}

/// One counter per value of `K`, with the other labels already bound.
pub type Counters<K> = ByLabel<K, IntCounter>;

impl<K: Label, T> ByLabel<K, T> {
    /// A handle per value of `K`, made by `make` from the value's text.
    pub fn from_fn(mut make: impl FnMut(&'static str) -> T) -> Self {
        Self {
            by: K::ALL.iter().map(|k| make(k.label())).collect(),
            kind: PhantomData,
        }
    }

    /// Each handle with its label value.
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        K::ALL.iter().copied().zip(&self.by)
    }
}

impl<K: Label> Counters<K> {
    /// The handles of `family` for every value of `K`, after the labels in
    /// `before` (e.g. the group's name).
    pub fn of(family: &IntCounterVec, before: &[&str]) -> Self {
        Self::from_fn(|label| {
            let mut values = before.to_vec();
            values.push(label);
            family.with_label_values(&values)
        })
    }

    /// Counters registered nowhere: they count into the void.
    pub fn detached() -> prometheus::Result<Self> {
        let by = K::ALL
            .iter()
            .map(|_| IntCounter::new("detached", "-"))
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Self {
            by,
            kind: PhantomData,
        })
    }
}

impl<K: Label, T> Index<K> for ByLabel<K, T> {
    type Output = T;

    fn index(&self, k: K) -> &T {
        &self.by[k.index()]
    }
}

/// A label enum defined elsewhere (it names a rule of its own module): its
/// `ALL` and `label` as the [`Label`] trait.
macro_rules! label_of {
    ($name:path) => {
        impl Label for $name {
            const ALL: &'static [Self] = &<$name>::ALL;
            fn label(self) -> &'static str {
                <$name>::label(self)
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_of!(crate::assign::Reason);
label_of!(crate::assign::Rejection);
label_of!(super::DownstreamErrorKind);
label_of!(super::UpstreamErrorKind);
label_of!(crate::health::Ejection);
label_of!(crate::assign::PassResult);

/// Defines a label enum: its variants with their label text.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn label(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum!(
    /// Why a client connection was closed for being slow.
    ClientTimeout {
        /// The request head did not arrive in time.
        Header => "header",
        /// The request body stalled.
        Body => "body",
        /// Idle between requests past the keep-alive timeout.
        Keepalive => "keepalive",
        /// The client stopped reading the response.
        Write => "write",
    }
);

label_enum!(
    /// How a TLS handshake on the HTTPS listener ended.
    Handshake {
        Ok => "ok",
        Failed => "failed",
        Timeout => "timeout",
    }
);

label_enum!(
    /// A client listener.
    Listener {
        Http => "http",
        Https => "https",
    }
);

label_enum!(
    /// Why a connection on a PROXY protocol listener was closed unserved.
    ProxyHeaderRefusal {
        /// Its peer is not among the listener's `proxy_protocol.from`.
        UntrustedPeer => "untrusted_peer",
        /// Its first bytes are not a valid PROXY v1 or v2 header.
        Malformed => "malformed",
        /// It closed before its header was complete.
        Truncated => "truncated",
        /// Its header did not arrive within `timeouts.client_header`.
        Timeout => "timeout",
    }
);

label_enum!(
    /// Why an access log line was lost.
    LogDrop {
        QueueFull => "queue_full",
        WriteError => "write_error",
    }
);

label_enum!(
    /// An active health check probe's result.
    Probe {
        Pass => "pass",
        Fail => "fail",
    }
);

label_enum!(
    /// A session cache lookup.
    CacheLookup {
        Hit => "hit",
        Miss => "miss",
    }
);

label_enum!(
    /// An answer's status class.
    StatusClass {
        Informational => "1xx",
        Success => "2xx",
        Redirection => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
);

impl StatusClass {
    pub fn of(status: u16) -> Self {
        match status / 100 {
            0 | 1 => StatusClass::Informational,
            2 => StatusClass::Success,
            3 => StatusClass::Redirection,
            4 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

label_enum!(
    /// A session store operation.
    StoreOp {
        Get => "get",
        Set => "set",
    }
);

label_enum!(
    /// How a session store operation failed.
    StoreFailure {
        Timeout => "timeout",
        Error => "error",
    }
);

label_enum!(
    /// What became of a failed exchange that could be retried.
    Retry {
        /// Sent again, to a sibling target.
        Retried => "retried",
        /// Not sent again: the retry budget was spent.
        BudgetExhausted => "budget_exhausted",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_falls_in_its_class() {
        let got: Vec<&str> = [100, 101, 200, 204, 304, 404, 499, 500, 599, 999]
            .map(|s| StatusClass::of(s).label())
            .to_vec();
        assert_eq!(
            got,
            [
                "1xx", "1xx", "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx", "5xx"
            ]
        );
    }

    #[test]
    fn a_counter_is_picked_by_its_label_value() -> prometheus::Result<()> {
        let family = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["group", "kind"])?;
        let c: Counters<Retry> = Counters::of(&family, &["blue"]);
        c[Retry::BudgetExhausted].inc();
        assert_eq!(
            family
                .with_label_values(&["blue", "budget_exhausted"])
                .get(),
            1
        );
        assert_eq!(family.with_label_values(&["blue", "retried"]).get(), 0);
        Ok(())
    }
}
