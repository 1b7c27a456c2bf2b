//! [`MachineError`]: what can go wrong setting up or running a scenario's
//! machine, shared by its assembly ([`super::machine`]) and the devices it
//! attaches ([`super::balloon`]).

use std::path::PathBuf;

use workloads::image::init;

/// Errors setting up or running a scenario (not the guest's own failures,
/// which end up in the result's outcome).
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The guest image.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    /// The VM.
    #[error(transparent)]
    Vm(#[from] vmm::linux::LinuxError),
    /// The host swapper.
    #[error("starting the host swapper")]
    Swapper(#[from] swapper::SwapperError),
    /// The swap disk.
    #[error("guest swap disk {path}")]
    SwapDisk {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The blk device.
    #[error("creating the swap disk device")]
    Blk(#[from] vmm::virtio::blk::BlkError),
    /// The guest root disk's image (`guest.root_disk`).
    #[error(transparent)]
    Rootfs(#[from] workloads::image::rootfs::RootfsError),
    /// The guest root disk's device.
    #[error("creating the guest root disk device")]
    RootDisk(#[source] vmm::virtio::blk::BlkError),
    /// The guest command line.
    #[error("guest command line")]
    Cmdline(#[from] init::InitError),
    /// The control socket could not be opened.
    #[error("control socket: {0}")]
    Api(String),
    /// The balloon device.
    #[error("balloon device")]
    Balloon(#[from] balloon::BalloonError),
    /// The run did not end and the stall guard stepped in (see [`super::guard`]).
    #[error("{0}")]
    Stalled(String),
    /// The run's own `redis-server` (`host.store_url = "private"`).
    #[error("the run's private redis-server: {0}")]
    PrivateStore(String),
    /// The kernel host swapper's swap device or cgroup.
    #[error(transparent)]
    KernelHost(#[from] super::kernel_host::KernelHostError),
}
