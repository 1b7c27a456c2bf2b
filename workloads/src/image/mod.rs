//! The guest image: a stock Debian kernel plus an initramfs with busybox, the
//! guest programs from this crate (static), the modules a guest needs, and an
//! `/init` that runs the command named on the kernel command line.
//!
//! Reusable pieces, for anyone building another image (e.g. the nested sandbox):
//! - [`kernel::ensure_debian_kernel`]: fetch and unpack Debian's kernel into the cache;
//!   gives bzImage, ELF vmlinux (PVH), modules directory, version.
//! - [`modules::closure`]: modules plus their dependencies, in load order.
//! - [`cpio::CpioWriter`]: a newc archive writer.
//! - [`bzimage::extract_vmlinux`], [`elf::Elf`]: header parsing.

pub mod bzimage;
pub mod cache;
pub mod cpio;
pub mod elf;
pub mod kernel;
pub mod modules;
pub mod tools;
