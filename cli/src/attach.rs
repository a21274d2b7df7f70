//! Interactive sessions: a container's output to this terminal, this terminal's input to
//! the container (`run -i`/`-t`, `attach`), raw mode and window size with a TTY, and the
//! detach keys (Ctrl-P Ctrl-Q) that leave the container running.

use std::io::Write;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_api::container::{AttachEvent, ContainerClient};
use berth_api::jsonrpsee::ws_client::WsClient;

/// Ctrl-P then Ctrl-Q, docker's default detach keys.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// How an attached session ended.
pub enum Ended {
    /// The container exited with this code.
    Exited(i32),
    /// The user pressed the detach keys; the container runs on.
    Detached,
}

/// Puts this terminal in raw mode for as long as it lives.
pub struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    /// Raw mode on stdin, when it is a terminal.
    pub fn enable() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// Rows and columns of the terminal on stdout.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize struct, which outlives the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// Reads stdin on its own thread (a blocked read must not keep the process alive at exit);
/// an empty chunk means end of input.
pub fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = std::io::Read::read(&mut stdin, &mut buf).unwrap_or(0);
            if tx.blocking_send(buf[..n].to_vec()).is_err() || n == 0 {
                return;
            }
        }
    });
    rx
}

/// Removes the detach sequence from `data`; true when it was typed (possibly across
/// reads: `held` carries a trailing Ctrl-P).
fn strip_detach(data: &[u8], held: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(data.len() + 1);
    for &b in data {
        if *held {
            *held = false;
            if b == DETACH_KEYS[1] {
                return (out, true);
            }
            out.push(DETACH_KEYS[0]);
        }
        if b == DETACH_KEYS[0] {
            *held = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
}

/// Attaches to container `id`: output to stdout/stderr (over `paced`), stdin to the
/// container when `stdin` is set, raw mode and resizes when `tty` is set (over `client`).
pub async fn session(
    client: &WsClient,
    paced: &crate::client::Paced,
    id: &str,
    tty: bool,
    stdin: bool,
) -> anyhow::Result<Ended> {
    let mut sub = paced.read(
        paced
            .client
            .attach(id.to_owned())
            .await
            .context("container.attach")?,
    );
    let interactive_terminal = tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let _raw = if interactive_terminal {
        RawMode::enable()
    } else {
        None
    };
    if tty && let Some((rows, cols)) = terminal_size() {
        let _ = client.resize(id.to_owned(), rows, cols).await;
    }
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    let mut input = stdin.then(stdin_chunks);
    let mut held = false;
    loop {
        tokio::select! {
            event = sub.next() => {
                let Some(event) = event else {
                    return Err(sub.cut_short("attach stream"));
                };
                match event.context("attach stream")? {
                    AttachEvent::Output { stream, data } => {
                        let bytes = BASE64.decode(data)?;
                        if stream == "stderr" {
                            let mut err = std::io::stderr().lock();
                            err.write_all(&bytes)?;
                            err.flush()?;
                        } else {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&bytes)?;
                            out.flush()?;
                        }
                    }
                    AttachEvent::Exit { exit_code } => return Ok(Ended::Exited(exit_code)),
                }
            }
            chunk = async { input.as_mut()?.recv().await }, if input.is_some() => {
                let chunk = chunk.unwrap_or_default();
                if chunk.is_empty() {
                    input = None;
                    if !tty {
                        client.input(id.to_owned(), None, Some(true)).await.context("container.input")?;
                    }
                    continue;
                }
                let (data, detach) = if interactive_terminal {
                    strip_detach(&chunk, &mut held)
                } else {
                    (chunk, false)
                };
                if !data.is_empty() {
                    client
                        .input(id.to_owned(), Some(BASE64.encode(&data)), None)
                        .await
                        .context("container.input")?;
                }
                if detach {
                    return Ok(Ended::Detached);
                }
            }
            Some(()) = async { winch.as_mut()?.recv().await }, if tty && winch.is_some() => {
                if let Some((rows, cols)) = terminal_size() {
                    let _ = client.resize(id.to_owned(), rows, cols).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_found_across_reads_and_kept_otherwise() {
        let mut held = false;
        assert_eq!(strip_detach(b"ab\x10", &mut held), (b"ab".to_vec(), false));
        assert!(held);
        assert_eq!(strip_detach(b"\x11", &mut held), (Vec::new(), true));
        let mut held = false;
        assert_eq!(
            strip_detach(b"\x10x", &mut held),
            (b"\x10x".to_vec(), false)
        );
    }
}
