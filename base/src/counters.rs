//! [`counters!`](crate::counters): a struct of relaxed atomic event counters
//! and a plain snapshot struct that has one `u64` per counter.

/// Defines a struct of relaxed [`AtomicU64`](std::sync::atomic::AtomicU64)
/// counters and its snapshot struct, with a `snapshot(&self)` method that
/// reads every counter (relaxed) into it.
///
/// The snapshot may carry fields of its own (gauges, histograms) before and
/// after the counters, in the order given (serde serializes them in that
/// order); `snapshot()` leaves them at their `Default`, so the snapshot must
/// implement `Default`. The counters struct derives `Debug` and `Default`;
/// the snapshot derives what its attributes say (e.g. serde's traits — the
/// paths resolve in the crate that invokes the macro). Each counter's doc
/// comment is put on both its atomic and its snapshot field.
///
/// ```
/// base::counters! {
///     /// Live counters.
///     pub struct Counters;
///     /// What they were, plus a gauge.
///     #[derive(Clone, Debug, Default, PartialEq, Eq)]
///     pub struct Snapshot {
///         /// A gauge the caller fills in.
///         pub target: u64,
///         counters {
///             /// Faults seen.
///             faults,
///             /// Pages written.
///             writes,
///         }
///     }
/// }
/// let c = Counters::default();
/// c.faults.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
/// assert_eq!(c.snapshot(), Snapshot { target: 0, faults: 2, writes: 0 });
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$cattr:meta])* $cvis:vis struct $counters:ident;
        $(#[$sattr:meta])* $svis:vis struct $snapshot:ident {
            $($(#[$hattr:meta])* pub $head:ident : $hty:ty,)*
            counters {
                $($(#[$doc:meta])* $name:ident,)*
            }
            $($(#[$tattr:meta])* pub $tail:ident : $tty:ty,)*
        }
    ) => {
        $(#[$cattr])*
        #[derive(Debug, Default)]
        $cvis struct $counters {
            $($(#[$doc])* pub $name: ::std::sync::atomic::AtomicU64,)*
        }

        $(#[$sattr])*
        $svis struct $snapshot {
            $($(#[$hattr])* pub $head: $hty,)*
            $($(#[$doc])* pub $name: u64,)*
            $($(#[$tattr])* pub $tail: $tty,)*
        }

        impl $counters {
            /// Reads every counter (relaxed); the snapshot's other fields are
            /// left at their default.
            #[allow(clippy::needless_update)]
            pub fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $($name: self.$name.load(::std::sync::atomic::Ordering::Relaxed),)*
                    ..::std::default::Default::default()
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    crate::counters! {
        /// Only counters.
        pub struct Plain;
        /// Their snapshot.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct PlainSnapshot {
            counters {
                /// One.
                a,
                b,
            }
        }
    }

    crate::counters! {
        struct Mixed;
        #[derive(Debug, Default, PartialEq)]
        struct MixedSnapshot {
            /// Before.
            pub first: u64,
            pub label: String,
            counters {
                hits,
            }
            /// After.
            pub times: Vec<u64>,
        }
    }

    #[test]
    fn snapshot_reads_every_counter() {
        let c = Plain::default();
        c.a.fetch_add(3, Ordering::Relaxed);
        c.b.fetch_add(1, Ordering::Relaxed);
        c.b.fetch_add(1, Ordering::Relaxed);
        assert_eq!(c.snapshot(), PlainSnapshot { a: 3, b: 2 });
    }

    #[test]
    fn extra_fields_default_and_keep_their_order() {
        let c = Mixed::default();
        c.hits.fetch_add(7, Ordering::Relaxed);
        let s = c.snapshot();
        assert_eq!(
            s,
            MixedSnapshot {
                first: 0,
                label: String::new(),
                hits: 7,
                times: vec![],
            }
        );
        // Field order is declaration order: head, counters, tail.
        let dbg = format!("{s:?}");
        let pos = |f: &str| dbg.find(f).unwrap();
        assert!(pos("first") < pos("label") && pos("label") < pos("hits"));
        assert!(pos("hits") < pos("times"));
    }
}
