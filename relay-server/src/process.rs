//! Settings of the relay's own process, made once at its start.

/// Turns transparent huge pages off for this process (Linux; elsewhere it
/// does nothing and answers `false`). Returns whether they are off.
///
/// mimalloc, the relay's allocator (decision 61), asks the kernel for huge
/// pages for its arenas, gives memory back after an idle second, and
/// faults it in again at the next burst of requests, 2 MiB zeroed at a
/// time. In the CLI bench (imports, pulls, a cold open: bursts with pauses
/// between) zeroing those pages took 27% of the relay's CPU; with huge
/// pages off the relay used 1.20–1.34 s of CPU over that bench instead of
/// 1.62–2.01 s (`docs/evidence.md`, "Huge pages"). A relay under steady load gained
/// nothing measurable from them (the append bench).
pub fn without_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::disable_transparent_huge_pages(true).is_ok()
            && rustix::thread::transparent_huge_pages_are_disabled().unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_turned_off_for_the_process() {
        assert!(super::without_huge_pages());
        // The flag belongs to the process: a thread started after sees it.
        let seen = std::thread::spawn(rustix::thread::transparent_huge_pages_are_disabled)
            .join()
            .unwrap()
            .unwrap();
        assert!(seen);
    }
}
