//! Replays the committed seed corpus (and crash reproducers) of each target through
//! its body, and checks the seeds still match what [`super::seeds`] builds.

use super::*;

fn replay_target(target: &str, body: fn(&[u8])) {
    base::corpus::replay(target, body);
    // The generated seeds run too (they are in the corpus unless it was pruned).
    for s in seeds(target) {
        body(&s);
    }
}

#[test]
fn virtqueue_corpus() {
    replay_target("virtqueue", virtqueue);
}

#[test]
fn blk_request_corpus() {
    replay_target("blk_request", blk_request);
}

#[test]
fn mmio_corpus() {
    replay_target("mmio", mmio);
}

#[test]
fn api_corpus() {
    replay_target("api", api);
}

#[test]
fn empty_and_tiny_inputs() {
    for t in [virtqueue, blk_request, mmio, api] {
        t(&[]);
        t(&[0xff]);
        t(&[0; 64]);
        t(&[0xff; 64]);
    }
}

/// `cargo test -p vmm --lib -- --ignored write_seeds` regenerates the seed files
/// (`seed-NN`); other files in the corpus (crash reproducers) are kept.
#[test]
#[ignore]
fn write_seeds() {
    for t in TARGETS {
        base::corpus::write_seeds(t, &seeds(t)).unwrap();
    }
}
