//! The encoder's CPU priority. On a CPU-only machine the encoder's threads share the cores with
//! the DICOM listener, whose acknowledgement a sender waits for before its next instance: with
//! the encoder's threads at a lower priority (a higher nice value), the short acknowledgement
//! path runs first whenever both want a core, and the encoder catches up in the gaps (the
//! backlog of acknowledged frames absorbs the difference, and bounds it). On Linux a thread's
//! nice value is its own and threads inherit it from the thread that creates them, so lowering
//! the thread that opens the sessions and starts the batchers lowers every thread ONNX Runtime
//! and the batchers start.

use std::io;

/// Sets the calling thread's nice value to `nice` (0..=19: only ever lowers its priority).
pub fn set_this_thread_nice(nice: i32) -> io::Result<()> {
    if !(0..=19).contains(&nice) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nice value {nice} is outside 0..=19"),
        ));
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
        let done = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's nice value (0 where threads have none of their own).
pub fn this_thread_nice() -> io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as above; errno is cleared first because -1 is also a valid nice value.
        unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
            if nice == -1 && *libc::__errno_location() != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(nice)
        }
    }
    #[cfg(not(target_os = "linux"))]
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_lowers_itself_only_and_its_children_inherit() {
        let before = this_thread_nice().unwrap();
        let (own, child) = std::thread::spawn(|| {
            set_this_thread_nice(9).unwrap();
            let child = std::thread::spawn(|| this_thread_nice().unwrap())
                .join()
                .unwrap();
            (this_thread_nice().unwrap(), child)
        })
        .join()
        .unwrap();
        assert_eq!((own, child), (9, 9));
        assert_eq!(
            this_thread_nice().unwrap(),
            before,
            "the caller is untouched"
        );
        assert!(set_this_thread_nice(-1).is_err(), "never raises priority");
        assert!(set_this_thread_nice(20).is_err());
    }
}
