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

/// One counter per value of `K`, with the other labels already bound.
#[derive(Debug, Clone)]
pub struct Counters<K> {
    by: Vec<IntCounter>,
    kind: PhantomData<fn(K)>,
}

impl<K: Label> Counters<K> {
    /// The handles of `family` for every value of `K`, after the labels in
    /// `before` (e.g. the group's name).
    pub fn of(family: &IntCounterVec, before: &[&str]) -> Self {
        let by = K::ALL
            .iter()
            .map(|k| {
                let mut values = before.to_vec();
                values.push(k.label());
                family.with_label_values(&values)
            })
            .collect();
        Self {
            by,
            kind: PhantomData,
        }
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

impl<K: Label> Index<K> for Counters<K> {
    type Output = IntCounter;

    fn index(&self, k: K) -> &IntCounter {
        &self.by[k.index()]
    }
}

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
