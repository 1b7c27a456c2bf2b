//! The probe payload: position-dependent x86-64 machine code, assembled at run time with
//! iced-x86's `code_asm` (no external assembler, no checked-in binary).
//!
//! It runs at CPL 3 with paging identity-mapping the control region, the doorbell page
//! and test RAM (set up by `vmm::flat`), no interrupts and no IDT. Its only side
//! channels are memory and MMIO writes to the doorbell; see [`super::abi`] for the
//! protocol. Registers:
//!
//! | reg | holds |
//! |---|---|
//! | r15 | control block address |
//! | r14 | doorbell address |
//! | r13 | test RAM base |
//! | rsi / rdi | cursor in the index / latency buffer |
//! | rcx | accesses left in the chunk |
//! | r10 | page address, r11 its tag, r12 start TSC, rbx the tag read back |

use iced_x86::code_asm::*;

use super::abi::*;

/// Errors from assembling the payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// iced-x86 refused an instruction or label.
    #[error("assembling the probe payload failed")]
    Asm(#[from] IcedError),
    /// The code outgrew its slot in the control region.
    #[error("the probe payload is {0} bytes, more than the {CODE_MAX} reserved for it")]
    TooBig(usize),
}

/// `rax = rdx:rax` after `rdtsc`.
fn tsc_to_rax(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.shl(rdx, 32)?;
    a.or(rax, rdx)
}

/// Assemble the payload for loading at [`CODE_ADDR`].
pub fn assemble() -> Result<Vec<u8>, PayloadError> {
    let mut a = CodeAssembler::new(64)?;
    let mut next_chunk = a.create_label();
    let mut access = a.create_label();
    let mut tag_ok = a.create_label();
    let mut finished = a.create_label();

    a.mov(r15, CONTROL_BLOCK_ADDR)?;
    a.mov(r14, DOORBELL_ADDR)?;
    a.mov(r13, qword_ptr(r15 + CB_RAM_BASE))?;
    a.mov(qword_ptr(r14), Doorbell::Ready as i32)?;

    a.set_label(&mut next_chunk)?;
    a.mov(rcx, qword_ptr(r15 + CB_COUNT))?;
    a.test(rcx, rcx)?;
    a.jz(finished)?;
    a.mov(rsi, INDEX_ADDR)?;
    a.mov(rdi, LATENCY_ADDR)?;

    a.set_label(&mut access)?;
    a.mov(eax, dword_ptr(rsi))?; // page index (zero-extends into rax)
    a.mov(r10, rax)?;
    a.shl(r10, 12)?;
    a.add(r10, r13)?; // page address
    a.mov(r11, r10)?;
    a.or(r11, 1)?; // abi::page_tag
    a.mov(rbx, r11)?;
    // Timed window: only the accesses to the test page. The tag is swapped in with
    // `xchg` (a locked read-modify-write), so a first touch is one write fault rather
    // than a read fault (zero page) followed by a write (copy-on-write) fault.
    a.lfence()?;
    a.rdtsc()?;
    tsc_to_rax(&mut a)?;
    a.mov(r12, rax)?;
    a.xchg(qword_ptr(r10 + PAGE_TAG_OFFSET), rbx)?;
    a.inc(qword_ptr(r10 + PAGE_COUNTER_OFFSET))?;
    a.lfence()?;
    a.rdtsc()?;
    tsc_to_rax(&mut a)?;
    a.sub(rax, r12)?;
    a.mov(qword_ptr(rdi), rax)?;
    // Tag check: 0 (first touch) or the page's own tag.
    a.test(rbx, rbx)?;
    a.jz(tag_ok)?;
    a.cmp(rbx, r11)?;
    a.je(tag_ok)?;
    a.inc(qword_ptr(r15 + CB_BAD_TAGS))?;
    a.mov(eax, dword_ptr(rsi))?;
    a.mov(qword_ptr(r15 + CB_LAST_BAD_PAGE), rax)?;
    a.mov(qword_ptr(r15 + CB_LAST_BAD_VALUE), rbx)?;
    a.set_label(&mut tag_ok)?;
    a.add(rsi, 4)?;
    a.add(rdi, 8)?;
    a.dec(rcx)?;
    a.jnz(access)?;

    a.inc(qword_ptr(r15 + CB_CHUNKS))?;
    a.mov(qword_ptr(r14), Doorbell::ChunkDone as i32)?;
    a.jmp(next_chunk)?;

    a.set_label(&mut finished)?;
    a.mov(qword_ptr(r14), Doorbell::Finished as i32)?;
    a.ud2()?; // never resumed: a triple fault if it is

    let code = a.assemble(CODE_ADDR)?;
    if code.len() as u64 > CODE_MAX {
        return Err(PayloadError::TooBig(code.len()));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    #[test]
    fn assembles_to_user_mode_code_that_only_talks_through_mmio() {
        let code = assemble().unwrap();
        assert!(code.len() < 512, "{} bytes", code.len());
        let mut d = Decoder::with_ip(64, &code, CODE_ADDR, DecoderOptions::NONE);
        let mnemonics: Vec<Mnemonic> = d.iter().map(|i| i.mnemonic()).collect();
        assert!(!mnemonics.contains(&Mnemonic::INVALID));
        // No port I/O, HLT or other CPL-0-only instructions.
        for bad in [Mnemonic::Out, Mnemonic::In, Mnemonic::Hlt, Mnemonic::Cli] {
            assert!(!mnemonics.contains(&bad), "{bad:?}");
        }
        // Exactly two timestamps per access, each behind an lfence.
        let pairs = mnemonics
            .windows(2)
            .filter(|w| w == &[Mnemonic::Lfence, Mnemonic::Rdtsc])
            .count();
        assert_eq!(pairs, 2);
        assert_eq!(
            mnemonics.iter().filter(|&&m| m == Mnemonic::Rdtsc).count(),
            2
        );
    }
}
