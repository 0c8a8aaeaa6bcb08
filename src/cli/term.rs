//! The terminal, for the REPL: raw mode while a line is edited, the
//! window's width, and Ctrl-C while an answer streams. Every `unsafe` call
//! of the CLI is here; the line editor itself (`line.rs`) is plain code.

use std::io;
use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Raw mode on standard input for as long as it lives: keys arrive one by
/// one, unechoed, and Ctrl-C arrives as a byte instead of a signal. Keys
/// typed ahead (while an answer streamed, or pasted) are kept, not flushed. Output
/// processing stays on, so `\n` still moves to the start of the next line.
/// Dropping it restores the settings it found.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Switches standard input to raw mode; fails when it is not a terminal.
    pub fn enable() -> io::Result<RawMode> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: an all-zero termios is a valid value for tcgetattr to
        // overwrite (it is plain integers and arrays).
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is standard input, open for the life of the process;
        // `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        raw.c_iflag &= !(libc::BRKINT | libc::ICRNL | libc::INPCK | libc::ISTRIP | libc::IXON);
        raw.c_cflag |= libc::CS8;
        raw.c_lflag &= !(libc::ECHO | libc::ICANON | libc::IEXTEN | libc::ISIG);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: as above; `raw` is a fully initialised termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `fd` is still standard input and `saved` came from
        // tcgetattr on it.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// The terminal's width in columns (80 when it cannot be asked).
pub fn columns() -> usize {
    // SAFETY: an all-zero winsize is a valid value for the ioctl to fill.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which is
    // valid and writable; on a non-terminal it fails and writes nothing.
    let rc = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C (SIGINT) sets a flag instead of ending the process,
/// so the REPL can stop the answer that is streaming and keep the session.
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; installing it replaces the default action.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// Whether Ctrl-C was pressed since the last call; clears the flag.
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}
