//! userfaultfd events: the bytes `read(2)` returns, decoded into
//! [`UffdEvent`].

use super::sys::{self, UffdMsg, UFFD_MSG_SIZE};

/// A userfaultfd event, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UffdEvent {
    /// A page fault.
    Fault {
        /// Faulting address (page aligned by the kernel unless EXACT_ADDRESS).
        addr: usize,
        /// The access was a write.
        write: bool,
        /// A write-protect fault (the page is present but protected).
        wp: bool,
        /// Faulting thread (needs `UFFD_FEATURE_THREAD_ID`; 0 without).
        tid: i32,
    },
    /// `madvise(MADV_DONTNEED/REMOVE)` on `[start, end)`: the pages are
    /// about to be zapped (`UFFD_FEATURE_EVENT_REMOVE`).
    Remove {
        /// Start of the range.
        start: usize,
        /// End of the range.
        end: usize,
    },
    /// `mremap` moved `[from, from + len)` to `to`
    /// (`UFFD_FEATURE_EVENT_REMAP`).
    Remap {
        /// Old start.
        from: usize,
        /// New start.
        to: usize,
        /// Length.
        len: usize,
    },
    /// `munmap` of `[start, end)` (`UFFD_FEATURE_EVENT_UNMAP`).
    Unmap {
        /// Start of the range.
        start: usize,
        /// End of the range.
        end: usize,
    },
    /// The process forked (`UFFD_FEATURE_EVENT_FORK`). The child's
    /// userfaultfd the kernel installed is closed by
    /// [`Uffd::read_events`](super::Uffd::read_events): nothing here serves a
    /// child's faults.
    Fork,
    /// An event type this module does not know.
    Unknown {
        /// The raw `UFFD_EVENT_*` value.
        event: u8,
    },
}

impl UffdEvent {
    /// Decodes one message.
    pub fn from_msg(m: &UffdMsg) -> Self {
        let [a0, a1, a2] = m.arg;
        match m.event {
            sys::UFFD_EVENT_PAGEFAULT => Self::Fault {
                addr: a1 as usize,
                write: a0 & sys::UFFD_PAGEFAULT_FLAG_WRITE != 0,
                wp: a0 & sys::UFFD_PAGEFAULT_FLAG_WP != 0,
                tid: m.arg_u32(2) as i32,
            },
            sys::UFFD_EVENT_REMOVE => Self::Remove {
                start: a0 as usize,
                end: a1 as usize,
            },
            sys::UFFD_EVENT_REMAP => Self::Remap {
                from: a0 as usize,
                to: a1 as usize,
                len: a2 as usize,
            },
            sys::UFFD_EVENT_UNMAP => Self::Unmap {
                start: a0 as usize,
                end: a1 as usize,
            },
            sys::UFFD_EVENT_FORK => Self::Fork,
            event => Self::Unknown { event },
        }
    }
}

/// A reusable buffer for [`Uffd::read_events`](super::Uffd::read_events):
/// room for `n` messages per `read(2)`.
#[derive(Debug)]
pub struct EventBuffer {
    bytes: Vec<u8>,
}

impl EventBuffer {
    /// A buffer for up to `n` (at least one) events per read.
    pub fn new(n: usize) -> Self {
        Self {
            bytes: vec![0; n.max(1) * UFFD_MSG_SIZE],
        }
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The first `n` messages of the last read.
    pub(super) fn msgs(&self, n: usize) -> impl Iterator<Item = UffdMsg> + '_ {
        self.bytes[..n * UFFD_MSG_SIZE]
            .chunks_exact(UFFD_MSG_SIZE)
            .map(|c| UffdMsg::from_bytes(c.try_into().expect("chunk of message size")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: u8, words: [u64; 3]) -> [u8; UFFD_MSG_SIZE] {
        let mut b = [0u8; UFFD_MSG_SIZE];
        b[0] = event;
        for (i, w) in words.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    fn decode(b: &[u8; UFFD_MSG_SIZE]) -> UffdEvent {
        UffdEvent::from_msg(&UffdMsg::from_bytes(b))
    }

    #[test]
    fn pagefault_flags_address_and_thread_id() {
        let mut b = msg(0x12, [0, 0x7000_0000, 0]);
        b[24..28].copy_from_slice(&1234u32.to_ne_bytes());
        assert_eq!(
            decode(&b),
            UffdEvent::Fault {
                addr: 0x7000_0000,
                write: false,
                wp: false,
                tid: 1234
            }
        );
        for (flags, write, wp) in [(1, true, false), (2, false, true), (3, true, true)] {
            let mut b = msg(0x12, [flags, 0x1000, 0]);
            b[24..28].copy_from_slice(&1234u32.to_ne_bytes());
            assert_eq!(
                decode(&b),
                UffdEvent::Fault {
                    addr: 0x1000,
                    write,
                    wp,
                    tid: 1234
                }
            );
        }
        // A minor fault carries neither write nor wp.
        assert_eq!(
            decode(&msg(0x12, [4, 0x2000, 0])),
            UffdEvent::Fault {
                addr: 0x2000,
                write: false,
                wp: false,
                tid: 0
            }
        );
    }

    #[test]
    fn range_events() {
        assert_eq!(
            decode(&msg(0x15, [0x1000, 0x3000, 0])),
            UffdEvent::Remove {
                start: 0x1000,
                end: 0x3000
            }
        );
        assert_eq!(
            decode(&msg(0x16, [0x4000, 0x6000, 0])),
            UffdEvent::Unmap {
                start: 0x4000,
                end: 0x6000
            }
        );
        assert_eq!(
            decode(&msg(0x14, [0x1000, 0x9000, 0x2000])),
            UffdEvent::Remap {
                from: 0x1000,
                to: 0x9000,
                len: 0x2000
            }
        );
        assert_eq!(decode(&msg(0x13, [7, 0, 0])), UffdEvent::Fork);
        assert_eq!(
            decode(&msg(0x42, [0, 0, 0])),
            UffdEvent::Unknown { event: 0x42 }
        );
    }

    #[test]
    fn buffer_yields_whole_messages() {
        let mut buf = EventBuffer::new(0);
        assert_eq!(buf.bytes_mut().len(), UFFD_MSG_SIZE);
        let mut buf = EventBuffer::new(2);
        buf.bytes_mut()[..32].copy_from_slice(&msg(0x15, [1, 2, 0]));
        buf.bytes_mut()[32..].copy_from_slice(&msg(0x16, [3, 4, 0]));
        let evs: Vec<_> = buf.msgs(2).map(|m| UffdEvent::from_msg(&m)).collect();
        assert_eq!(
            evs,
            [
                UffdEvent::Remove { start: 1, end: 2 },
                UffdEvent::Unmap { start: 3, end: 4 }
            ]
        );
        assert_eq!(buf.msgs(1).count(), 1);
    }
}
